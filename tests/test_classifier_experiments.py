import numpy as np
import pytest
import torch

from ganpaint.apps import classifier_experiments as ce
from ganpaint.world.probe import ProbeSource
from tests.toy import tiny_classifier


@pytest.fixture(scope="module")
def probe():
    return ProbeSource(tiny_classifier(), "tiny").probe(range(4))


def test_rotating_by_90_four_times_is_identity(probe):
    x, y = probe
    xr, yr = x, y
    for _ in range(4):
        xr, yr = ce.rotate(xr, yr, 90)
    assert torch.equal(xr, x) and torch.equal(yr, y)
    x1, y1 = ce.rotate(x, y, 90)
    assert torch.equal(x1[:, :, 0, :], x[:, :, :, -1])  # counter-clockwise: the right column goes up


def test_rotation_keeps_labels_valid(probe):
    x, y = probe
    xr, yr = ce.rotate(x, y, 45)
    assert xr.shape == x.shape and yr.dtype == torch.long
    assert set(yr.unique().tolist()) <= set(y.unique().tolist())


def test_patches_are_a_permutation(probe):
    x, y = probe
    p = ce.perturbation("patches:4")
    xp, yp = p(x, y, [0, 1, 2, 3])
    assert not torch.equal(xp, x)
    assert torch.equal(torch.bincount(yp.reshape(-1)), torch.bincount(y.reshape(-1)))
    for i in range(4):  # every 16×16 patch of the output is some patch of the input, labels too
        patches = {x[i, :, a:a + 16, b:b + 16].numpy().tobytes() for a in range(0, 64, 16) for b in range(0, 64, 16)}
        assert all(xp[i, :, a:a + 16, b:b + 16].numpy().tobytes() in patches for a in range(0, 64, 16) for b in range(0, 64, 16))
    again = p(x, y, [0, 1, 2, 3])
    assert torch.equal(again[0], xp)  # seeded by sample index


def test_noise_is_seeded_and_bad_specs_refused(probe):
    x, y = probe
    a, _ = ce.perturbation("noise:5")(x, y, [0, 1, 2, 3])
    b, _ = ce.perturbation("noise:5")(x, y, [0, 1, 2, 3])
    assert torch.equal(a, b) and 0 < (a - x).mean() < 5
    with pytest.raises(ValueError, match="unknown perturbation"):
        ce.perturbation("blur:3")


def test_robustness_report():
    """An identity perturbation keeps every detector exactly; heavy noise destroys them."""
    r = ce.robustness(tiny_classifier(), "tiny", ["conv3"], ["noise:0", "noise:100", "rotate:90"],
                      samples=32, batch_size=16, progress=False)
    assert set(r["perturbed"]) == {"noise:0", "noise:100", "rotate:90"}
    base = r["unperturbed"]["conv3"]
    assert base["detectors"] >= 2 and 1 <= base["unique"] <= base["detectors"]
    same = r["perturbed"]["noise:0"]["conv3"]
    assert {k: same[k] for k in ("detectors", "unique")} == base
    assert len(same["original_detectors"]) == base["detectors"]
    assert all(d["after"] == d["before"] >= ce.DETECTOR_IOU
               for d in same["original_detectors"].values())
    noisy = r["perturbed"]["noise:100"]["conv3"]  # noise 50× the images' range
    assert noisy["detectors"] < base["detectors"] and noisy["unique"] <= noisy["detectors"]
    assert noisy["original_detectors"].keys() == same["original_detectors"].keys()
    assert all(d["after"] < d["before"] for d in noisy["original_detectors"].values())
    turned = r["perturbed"]["rotate:90"]["conv3"]  # labels turn with the images
    assert all(0 <= d["after"] <= 1 for d in turned["original_detectors"].values())


def test_rotation_matrix_and_identity_basis():
    q = ce.random_rotation(8, 0)
    assert torch.allclose(q @ q.T, torch.eye(8), atol=1e-5)
    src = ProbeSource(tiny_classifier(), "tiny")
    _, base = ce._dissect(src, ["conv3"], 32, 0.005, 16)
    _, same = ce._dissect(ce.RotatedSource(src, "conv3", torch.eye(8)), ["conv3"], 32, 0.005, 16)
    assert np.allclose(base["conv3"], same["conv3"])
    r = ce.axis_alignment(tiny_classifier(), "tiny", "conv3", draws=2, samples=32, batch_size=16,
                          pca_concept="sky", progress=False)
    assert len(r["rotated"]) == 2 and r["pca"]["units"] == 8
    assert 1 <= r["pca"]["units_for_half_the_mass"] <= 8


def test_unit_importance():
    r = ce.unit_importance(tiny_classifier(), "tiny", "conv5", samples=60, batch_size=30,
                           classes=[0], progress=False)
    row = r["classes"]["domed square"]
    assert len(row["important_units"]) == 8  # all 8 units when fewer than 20
    assert 0 <= row["remove_top4"]["balanced"] <= 1 and r["chance"]["overall"] == pytest.approx(1 / 6)
    assert 0 <= r["overall_accuracy"] <= 1


def test_importance_views(tmp_path):
    """Best vs worst half, unit-class correlation and interpretability vs importance."""
    iou = np.random.default_rng(0).random((8, 10)) * 0.1
    r = ce.unit_importance(tiny_classifier(), "tiny", "conv5", samples=60, batch_size=30,
                           classes=[0, 1], iou=iou, progress=False)
    assert len(r["mean_importance"]) == 8 and r["best_iou"] == pytest.approx(iou.max(1), abs=1e-5)
    imp = np.array(r["mean_importance"])
    if imp.std() > 0:
        assert r["iou_importance_correlation"] == pytest.approx(
            np.corrcoef(iou.max(1), imp)[0, 1], abs=1e-3)
    else:  # no single unit changes an answer of this random network: no correlation to give
        assert r["iou_importance_correlation"] is None
    for row in r["classes"].values():
        corr = np.array(row["correlation"])
        top4 = row["important_units"][:4]
        assert row["correlation_top4"] == pytest.approx(corr[top4].mean(), abs=1e-3)
        assert row["correlation_rest"] == pytest.approx(np.delete(corr, top4).mean(), abs=1e-3)
        for key in ("remove_best_half", "remove_worst_half"):
            assert set(row[key]) == {"balanced", "overall"}
        assert row["mean_iou_others"] is None  # 8 units: none outside the top 20
    import json
    json.dumps(r, allow_nan=False)  # valid JSON: no NaN
    a = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    b = (torch.rand(50, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    a[:, 2] = 1.0  # a constant unit: no correlation, not NaN
    c = ce._correlation(a, b)
    assert c[:2] == pytest.approx([np.corrcoef(a[:, i], b)[0, 1] for i in range(2)], abs=1e-5)
    assert c[2] == 0
    ce.importance_figure(r, tmp_path / "v.png")
    assert (tmp_path / "v.png").stat().st_size > 10_000
