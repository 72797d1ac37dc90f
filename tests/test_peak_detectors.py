"""Single-unit peak detectors (Network Dissection's 'detectors without object labels')."""
import json
from collections import OrderedDict

import numpy as np
import pytest
import torch

from ganpaint.apps import peak_detectors as pk
from ganpaint.core.sources import ClassifierSource


class BlobProbe(ClassifierSource):
    """16-px probe images: concept 'blob' (a 4×4 red square) in every third image, at a place
    that moves with the index; green and blue noise everywhere (seeded by index)."""

    def __init__(self, model):
        super().__init__(model, "blobnet", ["ground", "blob"])

    def labelled(self, indices):
        xs, ys = [], []
        for i in indices:
            g = torch.Generator().manual_seed(int(i))
            x = torch.rand(3, 16, 16, generator=g) * 2 - 1
            x[0] = -1
            y = torch.zeros(16, 16, dtype=torch.long)
            if i % 3 == 0:
                r, c = (i * 5) % 12, (i * 7) % 12
                x[0, r:r + 4, c:c + 4] = 1
                y[r:r + 4, c:c + 4] = 1
            xs.append(x)
            ys.append(y)
        return torch.stack(xs), torch.stack(ys)


def blobnet():
    """Unit 2 of `feat` reads the red channel (the blob); units 0, 1, 3 read the noise."""
    conv = torch.nn.Conv2d(3, 4, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[2, 0] = 5.0
        conv.weight[0, 1], conv.weight[1, 2], conv.weight[3, 1], conv.weight[3, 2] = 3.0, 3.0, 2.0, 2.0
    return torch.nn.Sequential(OrderedDict(feat=conv, pool=torch.nn.AdaptiveAvgPool2d(1),
                                           flat=torch.nn.Flatten(), head=torch.nn.Linear(4, 2)))


def test_the_unit_reading_a_concept_is_its_best_peak_detector():
    r = pk.peak_detectors(BlobProbe(blobnet()), "feat", samples=60, held_out=60, batch_size=16,
                          labels={2: "red IoU 0.9"}, progress=False)
    row = r["concepts"]["blob"]
    assert row["unit"] == 2 and row["balanced_accuracy"] == 1.0 and row["unit_label"] == "red IoU 0.9"
    assert -5 < row["threshold"] < 5  # between the peaks without the blob (-5) and with it (5)
    assert row["runner_up"]["balanced_accuracy_fit"] < 0.8  # no noise unit comes close
    h = row["histogram"]
    assert sum(h["with"]) == 20 and sum(h["without"]) == 40  # every third of 60 held-out images
    assert abs(row["presence"] - 1 / 3) < 1e-3
    assert "ground" in r["skipped"]  # in every image: no image without it to tell apart
    json.dumps(r)  # the CLI writes it as is


def test_thresholds_agree_with_brute_force():
    g = torch.Generator().manual_seed(0)
    peaks = torch.randn(40, 6, generator=g).round(decimals=1)  # ties on purpose
    present = torch.rand(40, generator=g) < 0.4
    peaks[:, 3] += 2 * present  # one informative unit
    acc, thr = pk.best_thresholds(peaks, present)
    for u in range(6):
        cands = np.unique(peaks[:, u].numpy())
        brute = max([pk.balanced_accuracy(peaks[:, u] > t - 1e-4, present) for t in cands] + [0.5])
        assert abs(float(acc[u]) - brute) < 1e-6, u
        assert abs(pk.balanced_accuracy(peaks[:, u] > float(thr[u]), present) - float(acc[u])) < 1e-6
    assert int(acc.argmax()) == 3
    with pytest.raises(ValueError, match="with and without"):
        pk.best_thresholds(peaks, torch.ones(40, dtype=torch.bool))


def test_histogram_figure(tmp_path):
    r = pk.peak_detectors(BlobProbe(blobnet()), "feat", samples=30, held_out=30, batch_size=16,
                          progress=False)
    pk.histogram_figure(r, tmp_path / "p.png")
    from PIL import Image
    assert Image.open(tmp_path / "p.png").size[0] > 200


@pytest.mark.slow
def test_cli_on_the_shipped_classifier(tmp_path, capsys):
    """`ganpaint peak-detectors` on the shipped scene CNN: JSON and PNG; on the scene world a
    dome (in about a fifth of the probe scenes) has a unit that tells it well above chance."""
    from tests.toy import ROOT, error_line, run_cli
    code, out, err = run_cli(capsys, ["peak-detectors", "--samples", 200, "--held-out", 200,
                                      "--out", tmp_path, "--json", "--dissection",
                                      ROOT / "models" / "cnn_dissection"])
    assert code == 0, err
    r = json.loads(out)
    assert (tmp_path / "peak_detectors.png").is_file() and (tmp_path / "peak_detectors.json").is_file()
    assert r["concepts"]["dome"]["balanced_accuracy"] > 0.75 and "unit_label" in r["concepts"]["dome"]
    code, _, err = run_cli(capsys, ["peak-detectors", "--layer", "conv9", "--samples", 20,
                                    "--out", tmp_path])
    assert code == 2 and "conv9" in error_line(err) and "conv5" in error_line(err)


def test_presence_is_a_share_of_the_image_with_several_label_maps():
    """With two label maps per pixel (N, 2, S, S), a concept is present when it covers
    `min_share` of the image's pixels, as with one map (not of the pixels times the maps)."""
    class TwoMaps(BlobProbe):
        def __init__(self, model):
            ClassifierSource.__init__(self, model, "blobnet", ["ground", "blob", "plain"])

        def labelled(self, indices):
            x, y = BlobProbe.labelled(self, indices)
            return x, torch.stack([y, torch.full_like(y, 2)], 1)
    kw = dict(min_share=0.04)  # the 16-px blob is 6 % of a 16×16 image
    one = pk.peaks_and_presence(BlobProbe(blobnet()), "feat", range(12), **kw)[1]
    two = pk.peaks_and_presence(TwoMaps(blobnet()), "feat", range(12), **kw)[1]
    assert one[:, 1].sum() == 4 and torch.equal(two[:, :2], one) and two[:, 2].all()
