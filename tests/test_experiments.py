import numpy as np
import pytest
import torch

from ganpaint import experiments
from ganpaint.evaluate import frechet
from tests.test_intervene import painter  # noqa: F401  (module fixture)
from tests.toy import ToySegmenter


def test_ablation_curve_shape_and_reproducible(painter, tmp_path):
    seg = ToySegmenter()
    r = experiments.ablation(painter, seg, "red", [0, 2, 8], samples=30, batch_size=10, progress=False)
    assert r["k"] == [0, 2, 8] and r["removed"][0] == 0 and r["random_removed"][0] == 0
    # ablating all 8 units of the layer, ranked or random, is the same edit in every draw
    assert len(r["random_draws"]) == 5 and all(d[-1] == pytest.approx(r["removed"][-1]) for d in r["random_draws"])
    # two units drawn at random differ between draws; the reported curve is their mean
    assert len({d[1] for d in r["random_draws"]}) > 1
    assert r["random_removed"][1] == pytest.approx(np.mean([d[1] for d in r["random_draws"]]))
    assert r == experiments.ablation(painter, seg, "red", [0, 2, 8], samples=30, batch_size=10,
                                     progress=False)
    local = experiments.ablation(painter, seg, "red", [0, 8], samples=30, batch_size=10,
                                 local=True, progress=False, strip=tmp_path / "s.png")
    assert local["local"] and local["pixels_before"] <= r["pixels_before"]
    from PIL import Image
    pic = np.asarray(Image.open(tmp_path / "s.png"))  # six scenes before (top) and after (bottom)
    assert pic.shape[0] == 2 * 2 * 16 and local["strip_k"] == 8
    assert not np.array_equal(pic[:32], pic[32:])


def test_insertion_groups_by_context(painter):
    seg = ToySegmenter()
    r = experiments.insertion(painter, seg, "bright", units=3, samples=20, batch_size=10,
                              cells_per_sample=2, progress=False)
    assert sum(v["n"] for v in r["context"].values()) == 40
    assert set(r["context"]) <= set(seg.concepts)


def test_frechet_distance():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2000, 4)), rng.normal(size=(2000, 4))
    assert frechet(a, b) < 0.05
    assert frechet(a, b + 1.0) == pytest.approx(4.0, abs=0.2)


class _RenderGenerator:
    """A 'generator' that draws renders (seeds disjoint from eval-gan's), optionally noisy."""
    def __init__(self, noise=0.0):
        self.noise = noise

    def latents(self, idx, seed):
        return torch.tensor(idx)

    def __call__(self, z):
        from ganpaint.scenes import render_batch, to_tensor_images
        x = to_tensor_images(render_batch([7_000_000 + int(i) for i in z], 64)[0])
        g = torch.Generator().manual_seed(int(z[0]))
        return (x + self.noise * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def test_eval_gan_judges_with_segmenter_and_an_independent_network():
    from ganpaint.classifier import features, load_classifier
    from ganpaint.evaluate import check_bars, eval_gan
    from ganpaint.segmenter import load_segmenter
    seg, net = load_segmenter(), load_classifier()
    run = dict(samples=60, batch_size=30, progress=False, judge=lambda x: features(net, x))
    clean, noisy = eval_gan(_RenderGenerator(), seg, **run), eval_gan(_RenderGenerator(0.5), seg, **run)
    assert clean["fd_floor"] == noisy["fd_floor"] and clean["fd_judge_floor"] == noisy["fd_judge_floor"]
    assert noisy["fd"] > 3 * clean["fd"] and noisy["fd_judge"] > 3 * clean["fd_judge"]
    f = clean["fractions"]
    assert abs(f["generated"]["sky"] - f["renders"]["sky"]) < 0.1  # renders look like renders
    names = [name for name, _, figures in check_bars(clean) if "classifier features" in figures]
    assert names == ["Fréchet distance"]
