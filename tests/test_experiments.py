import numpy as np
import pytest

from ganpaint import experiments
from ganpaint.evaluate import frechet
from tests.test_intervene import painter  # noqa: F401  (module fixture)
from tests.toy import ToySegmenter


def test_ablation_curve_shape_and_reproducible(painter, tmp_path):
    seg = ToySegmenter()
    r = experiments.ablation(painter, seg, "red", [0, 2, 8], samples=30, batch_size=10, progress=False)
    assert r["k"] == [0, 2, 8] and r["removed"][0] == 0 and r["random_removed"][0] == 0
    # ablating all 8 units of the layer, ranked or random, is the same edit
    assert r["removed"][-1] == pytest.approx(r["random_removed"][-1])
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
