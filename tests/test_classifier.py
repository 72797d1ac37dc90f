import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from ganpaint.world.classifier import CATEGORIES, category
from ganpaint.world.labels import INDEX
from ganpaint.world.probe import ProbeSource
from tests.toy import ROOT, tiny_classifier


def lab(**fractions):
    """A 100×100 label map with the given concept fractions (rest grass)."""
    flat = np.full(10000, INDEX["grass"], np.uint8)
    i = 0
    for name, f in fractions.items():
        n = int(f * 10000)
        flat[i:i + n] = INDEX[name]
        i += n
    return flat.reshape(100, 100)


def test_category_rules():
    name = lambda l: CATEGORIES[category(l)]
    assert name(lab(dome=0.01, building=0.2)) == "domed square"
    assert name(lab(building=0.2, road=0.1)) == "village street"
    assert name(lab(building=0.2)) == "houses"
    assert name(lab(tree=0.3)) == "forest"
    assert name(lab(road=0.2)) == "farm road"
    assert name(lab(sky=0.5)) == "open field"


def test_probe_source_is_deterministic_and_exact():
    src = ProbeSource(tiny_classifier(), "tiny")
    acts, labels, images = src.batch([0, 1, 2], ["conv3"])
    assert acts["conv3"].shape == (3, 8, 8, 8) and labels.shape == (3, 64, 64)
    again = src.activations([1], ["conv3"])
    assert torch.allclose(again["conv3"][0], acts["conv3"][1], atol=1e-5)


@pytest.mark.slow
def test_classifier_dissection_cli(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "ganpaint", "dissect", "--classifier",
                        "tests.toy:tiny_classifier", "--layers", "conv2", "conv3", "--samples", "32",
                        "--out", str(tmp_path / "c")], env=env, cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    d = json.loads((tmp_path / "c" / "dissection.json").read_text())
    assert d["quantile"] == 0.005 and d["kind"] == "classifier"
    assert d["layers"]["conv2"]["units"] == 4 and d["layers"]["conv3"]["units"] == 8
    assert (tmp_path / "c" / "report.html").exists()
