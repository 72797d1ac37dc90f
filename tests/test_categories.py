"""Probe labels in Network Dissection's categories, and unique detectors per category."""
import numpy as np
import pytest
import torch

from ganpaint.core.dissection import Dissection
from ganpaint.world import categories as cat
from ganpaint.world import scenes
from ganpaint.world.labels import INDEX


def test_three_label_maps_per_probe_image():
    img, maps = cat.render_labelled(scenes.HELDOUT_SEED + 3, 64)
    _, lab, surface = scenes.render(scenes.HELDOUT_SEED + 3, 64, materials=True)
    assert maps.shape == (3, 64, 64) and np.array_equal(maps[0], lab)
    for k, (lo, hi) in enumerate(zip(cat.OFFSETS, list(cat.OFFSETS[1:]) + [len(cat.CONCEPTS_ALL)])):
        assert lo <= maps[k].min() and maps[k].max() < hi  # each map in its own concept range
    mat = np.array(cat.CONCEPTS_ALL)[maps[1]]
    assert (mat[lab == INDEX["sky"]] == "-").all()  # the sky has no material
    assert set(mat[lab == INDEX["building"]]) <= {"brick", "plaster"}
    assert (mat[surface == scenes.BRICK] == "brick").all()
    assert set(mat[lab == INDEX["window"]]) <= {"glass"}


def test_colour_terms_name_their_prototypes():
    protos = np.array(list(cat.COLOURS.values()), np.uint8)[None]  # (1, 11, 3)
    assert cat.colour_map(protos)[0].tolist() == list(range(len(cat.COLOURS)))
    shades = np.array([[[250, 250, 250], [10, 10, 12], [200, 40, 40], [40, 60, 230]]], np.uint8)
    names = [list(cat.COLOURS)[i] for i in cat.colour_map(shades)[0]]
    assert names == ["white", "black", "red", "blue"]


def test_category_counts():
    units = [{"unit": u, "level": 1.0, "levels": {"0.005": 1.0}} for u in range(4)]
    d = Dissection({"concepts": ["dome", "roof", "brick", "red"], "detector_iou": 0.04,
                    "categories": {"dome": "object", "roof": "part", "brick": "material", "red": "colour"},
                    "layers": {"conv5": {"units": 4, "unit_stats": units, "ranking": {},
                                         "detectors": {"dome": 3, "red": 1}}}})
    r = d.category_counts()
    row = r["layers"]["conv5"]
    assert row["unique"] == {"object": 1, "part": 0, "material": 0, "colour": 1}
    assert row["detectors"]["object"] == 3 and row["concepts"]["colour"] == ["red"]
    plain = Dissection({**d.summary, "categories": None})
    with pytest.raises(ValueError, match="--probe-labels all"):
        plain.category_counts()


def test_probe_source_with_all_labels():
    from ganpaint.world.probe import ProbeSource
    from tests.toy import tiny_classifier
    src = ProbeSource(tiny_classifier(), "tiny", labels="all")
    acts, labels, images = src.batch([0, 1], ["conv3"])
    assert labels.shape == (2, 3, 64, 64) and len(src.concepts) == len(cat.CONCEPTS_ALL)
    assert src.categories["door"] == "part" and src.categories["brick"] == "material"
    assert src.describe()["probe_labels"] == "all"
    with pytest.raises(ValueError, match="labels='objects'"):
        ProbeSource(tiny_classifier(), "tiny", labels="all", perturb=lambda x, y, i: (x, y))


def test_a_run_with_other_probe_labels_says_how_to_resume(tmp_path):
    """A folder dissected with the object labels (as every run before --probe-labels) refuses a
    run with all the labels, and the error names the flag that resumes it."""
    from ganpaint.core.dissect import dissect
    from ganpaint.world.probe import ProbeSource
    from tests.toy import tiny_classifier
    kw = dict(samples=8, batch_size=8, progress=False, log=lambda *a: None)
    dissect(ProbeSource(tiny_classifier(), "tiny", labels="objects"), ["conv3"], tmp_path / "d", **kw)
    with pytest.raises(ValueError, match="resume it with --probe-labels objects"):
        dissect(ProbeSource(tiny_classifier(), "tiny", labels="all"), ["conv3"], tmp_path / "d", **kw)


@pytest.mark.slow
def test_dissect_and_categories_cli(tmp_path, capsys):
    import json

    from tests.toy import error_line, run_cli
    code, _, err = run_cli(capsys, ["dissect", "--classifier", "scenes-cnn", "--layers", "conv3",
                                    "conv5", "--samples", 48, "--batch-size", 24, "--out",
                                    tmp_path / "d", "--no-report"])
    assert code == 0, err
    d = Dissection.load(tmp_path / "d")
    assert d["categories"]["green"] == "colour" and "-" not in d.concepts  # no material: ignored
    assert d.results("conv5")["iou"].shape == (256, len(cat.CONCEPTS_ALL) - 1)
    code, out, err = run_cli(capsys, ["categories", "--dissection", tmp_path / "d", "--json"])
    assert code == 0, err
    r = json.loads(out)
    assert set(r["layers"]) == {"conv3", "conv5"} and (tmp_path / "d" / "categories.png").is_file()
    for layer, row in r["layers"].items():
        assert sum(row["unique"].values()) == len(d["layers"][layer]["detectors"])
    code, out, err = run_cli(capsys, ["dissect", "--classifier", "scenes-cnn", "--layers", "conv5",
                                      "--samples", 16, "--batch-size", 16, "--out", tmp_path / "o",
                                      "--no-report", "--probe-labels", "objects"])
    assert code == 0, err
    code, out, err = run_cli(capsys, ["categories", "--dissection", tmp_path / "o", "--json"])
    assert code == 0 and json.loads(out)["categories"] == ["object", "part"]  # objects only
    from tests.toy import ROOT  # a generator's dissection: its segmenter gives no categories
    code, _, err = run_cli(capsys, ["categories", "--dissection", ROOT / "models" / "dissection",
                                    "--out", tmp_path / "g"])
    assert code == 2 and "--probe-labels all" in error_line(err)


def test_probe_seeds_of_dissections_and_experiments_are_apart():
    """Each dissection seed and each classifier experiment renders probe images of its own:
    a dissection with --seed 5 or 6 used to render the importance and attack images."""
    from ganpaint.world.probe import ATTACK_BLOCK, IMPORTANCE_BLOCK, ProbeSource, block
    from tests.toy import tiny_classifier
    blocks = [block(s) for s in range(100)]
    assert len(set(blocks)) == 100 and not set(blocks) & {IMPORTANCE_BLOCK, ATTACK_BLOCK}
    assert block(0) == 0  # seed 0 keeps the images every shipped dissection used
    with pytest.raises(ValueError, match="0..99"):
        ProbeSource(tiny_classifier(), "tiny", seed=100)
