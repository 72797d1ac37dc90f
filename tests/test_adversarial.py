"""Attacks seen through units, on a toy classifier whose answer reads units 0 and 1 only."""
import json
from collections import OrderedDict

import pytest
import torch

from ganpaint.apps import adversarial as adv


def toy():
    """feat units 0 and 1 read the red and green channels and decide the class; units 2 and 3
    read the blue channel, which the class ignores."""
    conv = torch.nn.Conv2d(3, 4, 1)
    head = torch.nn.Linear(4, 2)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[0, 0], conv.weight[1, 1], conv.weight[2, 2], conv.weight[3, 2] = 1.0, 1.0, 1.0, -1.0
        head.weight.copy_(torch.tensor([[1.0, -1.0, 0, 0], [-1.0, 1.0, 0, 0]]))
        head.bias.zero_()
    return torch.nn.Sequential(OrderedDict(feat=conv, pool=torch.nn.AdaptiveMaxPool2d(1),
                                           flat=torch.nn.Flatten(), head=head)).eval()


def test_an_attack_moves_the_units_the_answer_reads():
    model = toy()
    x = torch.rand(40, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = model(x).argmax(1)  # clean accuracy 1 by construction
    r = adv.attack(model, "feat", x, y, {0: [0], 1: [1]}, eps_list=(0.01, 0.2), steps=10,
                   defence_k=(0, 1, 2), draws=3, labels={0: "red", 1: "green"},
                   class_names={0: "reddish", 1: "greenish"}, progress=False)
    json.dumps(r)
    assert r["clean_accuracy"] == 1.0
    small, big = r["eps"]["0.01"], r["eps"]["0.2"]
    assert big["success"] > 0.5 and big["attacked_accuracy"] < small["attacked_accuracy"] <= 1.0
    assert big["linf"] <= 0.2 + 1e-6
    moved = {u["unit"]: u["mean_change"] for u in big["top_changed_units"]}
    assert abs(moved[0]) > 0 and abs(moved[1]) > 0
    assert moved.get(2, 0.0) == 0.0 and moved.get(3, 0.0) == 0.0  # blue untouched: no gradient
    assert {u["unit"] for u in big["top_changed_units"][:2]} == {0, 1}
    top = big["top_changed_units"][0]
    assert top["label"] in ("red", "green") and top["important_to"]
    # the two units moved are exactly the source's and the target's important units
    assert big["overlap_source"] == big["overlap_target"] == 1 / adv.TOP_CHANGED
    assert set(big["pairs"]) <= {"reddish → greenish", "greenish → reddish"}
    d = r["defence"]
    assert d["pool"] == 2 and set(d["k"]) == {"0", "1", "2"}
    assert d["k"]["0"]["important"] == d["k"]["0"]["random"]  # nothing deactivated: the same
    # both important units off: every logit is 0, argmax says class 0 for all
    off = d["k"]["2"]["important"]
    assert off["clean"] == float((y == 0).float().mean())


def test_figure(tmp_path):
    model = toy()
    x = torch.rand(12, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    y = model(x).argmax(1)
    r = adv.attack(model, "feat", x, y, {0: [0], 1: [1]}, eps_list=(0.05, 0.1), steps=3,
                   defence_k=(0, 1), draws=1, progress=False)
    adv.attack_figure(r, tmp_path / "a.png")
    assert (tmp_path / "a.png").stat().st_size > 10_000


@pytest.mark.slow
def test_cli_on_the_shipped_classifier(tmp_path, capsys):
    from tests.toy import ROOT, run_cli
    code, out, err = run_cli(capsys, ["adversarial", "--samples", 24, "--importance-samples", 60,
                                      "--eps", 0.02, "--steps", 3, "--out", tmp_path, "--json",
                                      "--dissection", ROOT / "models" / "cnn_dissection"])
    assert code == 0, err
    r = json.loads(out)
    assert (tmp_path / "adversarial.png").is_file() and r["images"] == 24 and r["units"] == 256
    row = r["eps"]["0.02"]
    assert row["attacked_accuracy"] <= r["clean_accuracy"] and "label" in row["top_changed_units"][0]
