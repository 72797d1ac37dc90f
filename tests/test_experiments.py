import numpy as np
import pytest
import torch

from ganpaint.apps import experiments
from ganpaint.apps.evaluate import frechet
from ganpaint.core.intervene import cell_shares
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
    with pytest.raises(ValueError, match="random_draws"):
        experiments.ablation(painter, seg, "red", [0, 2], samples=10, random_draws=0, progress=False)
    local = experiments.ablation(painter, seg, "red", [0, 8], samples=30, batch_size=10,
                                 local=True, progress=False, strip=tmp_path / "s.png")
    assert local["local"] and local["pixels_before"] <= r["pixels_before"]
    from PIL import Image
    pic = np.asarray(Image.open(tmp_path / "s.png"))  # six scenes before (top) and after (bottom)
    assert pic.shape[0] == 2 * 2 * 16 and local["strip_k"] == 8
    assert not np.array_equal(pic[:32], pic[32:])

class SparseRed(ToySegmenter):
    """'red' only in scenes with at least 150 red pixels (about half of the toy's)."""

    def segment(self, images, size=None):
        lab = super().segment(images, size)
        few = (lab == 3).flatten(1).sum(1) < 150
        lab[few[:, None, None] & (lab == 3)] = 1
        return lab


def test_ablation_strip_shows_the_concept_first(painter, tmp_path):
    seg = SparseRed()
    experiments.ablation(painter, seg, "red", [0, 8], samples=10, batch_size=10, local=True,
                         progress=False, strip=tmp_path / "s.png")
    from PIL import Image

    from ganpaint.world.scenes import to_uint8_images
    pic = np.asarray(Image.open(tmp_path / "s.png"))[:32:2, ::2]  # the top row, at 1×
    base = painter.render(painter.generator.latents(range(10), experiments.EXPERIMENT_SEED))
    scenes = to_uint8_images(base)
    shown = [next(j for j in range(10) if np.array_equal(pic[:, 16 * i:16 * i + 16], scenes[j]))
             for i in range(6)]
    has = (seg.segment(base) == 3).flatten(1).any(1).tolist()
    assert 0 < sum(has) < 6  # so the six shown mix scenes with and without it
    assert shown == sorted(range(10), key=lambda j: not has[j])[:6]


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
        from ganpaint.world.scenes import render_batch, to_tensor_images
        x = to_tensor_images(render_batch([7_000_000 + int(i) for i in z], 64)[0])
        g = torch.Generator().manual_seed(int(z[0]))
        return (x + self.noise * torch.randn(x.shape, generator=g)).clamp(-1, 1)

@pytest.mark.slow
def test_eval_gan_judges_with_segmenter_and_an_independent_network():
    from ganpaint.world.classifier import features, load_classifier
    from ganpaint.apps.evaluate import check_bars, eval_gan
    from ganpaint.world.segmenter import load_segmenter
    seg, net = load_segmenter(), load_classifier()
    run = dict(samples=100, batch_size=50, progress=False, judge=lambda x: features(net, x))
    clean, noisy = eval_gan(_RenderGenerator(), seg, **run), eval_gan(_RenderGenerator(0.5), seg, **run)
    assert clean["fd_floor"] == noisy["fd_floor"] and clean["fd_judge_floor"] == noisy["fd_judge_floor"]
    assert noisy["fd"] > 3 * clean["fd"] and noisy["fd_judge"] > 3 * clean["fd_judge"]
    f = clean["fractions"]
    assert abs(f["generated"]["sky"] - f["renders"]["sky"]) < 0.1  # renders look like renders
    # verdicts are computed from the figures (two sets of renders differ by sampling noise of
    # the size of a 2× blur at these counts, so only clearly worse images must fail)
    for r in (clean, noisy):
        ok = {name: v for name, v, _ in check_bars(r)}
        assert ok["Fréchet distance (classifier)"] == (r["fd_judge"] < r["fd_judge_ref2x"])
        assert ok["Fréchet distance (segmenter)"] is None  # reported, not judged
    assert noisy["fd_judge"] > noisy["fd_judge_ref4x"] > noisy["fd_judge_ref2x"]

def _shares_of(grid_labels, n=10):
    """(C, h, w) shares from a per-cell label grid (each cell one concept)."""
    lab = torch.as_tensor(grid_labels)
    return cell_shares(lab[None], n, lab.shape)[0]

def test_painting_picks_the_cells_a_person_would():
    S, G, B, D = 0, 2, 5, 9  # sky, grass, building, door in the scene world's label order
    W, ground = 8, [G, 3]  # window; grass and road
    grid = [[S, S, S, S],
            [S, B, B, S],
            [G, B, D, G],
            [G, G, G, G]]
    sh = _shares_of(grid)
    # the wall's foot: a wall cell with ground below and no door in it (not the door's cell)
    assert experiments._wall_foot(sh, B, D, ground) == (2, 1)
    # not a wall cell above a window: only the wall's bottom row counts
    assert experiments._wall_foot(_shares_of([[B, B], [W, B], [B, B], [G, G]]), B, D, ground) == (2, 0)
    assert experiments._sky_cell(sh, S) == (0, 1)  # highest open sky, nearest the middle
    assert experiments._grass_patch(sh, G) is None  # no 2×2 block of grass
    grid[2][1] = G  # now the wall's foot moves up and a grass patch appears
    sh = _shares_of(grid)
    assert experiments._wall_foot(sh, B, D, ground) == (1, 1)
    assert experiments._grass_patch(sh, G) == (2, 0)
    assert experiments._wall_foot(_shares_of([[S, S], [G, G]]), B, D, ground) is None

def test_painting_figures_on_the_shipped_model():
    """Few scenes, but the real model: scenes are taken in seed order, each figure counts the
    scenes it used, and removing trees leaves fewer tree pixels in every scene."""
    from ganpaint.apps import registry
    from ganpaint.core.dissection import Dissection
    from ganpaint.core.intervene import Painter
    from ganpaint.core.checkpoint import MODELS
    g, seg = registry.load_generator("scenes"), registry.load_segmenter("scenes")
    painter = Painter(g, Dissection.load(MODELS / "dissection"))
    r = experiments.painting(painter, seg, scenes=(3, 4, 2), progress=False)
    assert len(r["door_dab"]["wall_gain"]) == 3 == len(r["scenes"]["wall"])
    assert len(r["tree_stroke"]["left"]) == 4 and len(r["tree_draw_gain"]) == 2
    for kind in r["scenes"].values():
        assert kind == sorted(kind)
    assert all(0 <= v < 1 for v in r["tree_stroke"]["left"])
    assert 0 <= r["tree_stroke"]["background_share"] <= 1

def test_unit_counts_out_of_range_are_refused(painter):
    seg = ToySegmenter()
    with pytest.raises(ValueError, match=r"k must be in 0\.\.8"):
        experiments.ablation(painter, seg, "red", [0, -5], samples=4, progress=False)
    with pytest.raises(ValueError, match=r"k must be in 0\.\.8"):
        experiments.ablation(painter, seg, "red", [100000], samples=4, progress=False)
    with pytest.raises(ValueError, match=r"units must be in 1\.\.8"):
        experiments.insertion(painter, seg, "red", units=-3, samples=4, progress=False)

def test_segmenter_evaluation_needs_samples():
    from ganpaint.world.segmenter import evaluate
    with pytest.raises(ValueError, match="at least 1"):
        evaluate(ToySegmenter(), samples=0)

def test_eval_gan_with_a_segmenter_without_features():
    """features() is optional in the Segmenter protocol: eval-gan skips that one distance and
    says so, instead of failing on a custom segmenter (AttributeError before)."""
    from ganpaint.apps.evaluate import check_bars, eval_gan
    from ganpaint.world.segmenter import load_unet

    class Labels:  # only the required protocol: concepts and segment()
        def __init__(self, seg):
            self.concepts, self.segment = seg.concepts, seg.segment

    r = eval_gan(_RenderGenerator(), Labels(load_unet()), samples=20, batch_size=20,
                 progress=False)
    assert "fd" not in r and "fd_ref2x" not in r
    assert r["notes"] == ["Fréchet distance on the segmenter's features skipped: Labels has no "
                          "features() (optional in the Segmenter protocol)"]
    assert abs(r["fractions"]["generated"]["sky"] - r["fractions"]["renders"]["sky"]) < 0.1
    rows = check_bars(r)
    assert ("note", None, r["notes"][0]) in rows
    assert not any(name.startswith("Fréchet") for name, _, _ in rows)
