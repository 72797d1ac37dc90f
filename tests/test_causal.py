"""Causal rankings find the units that draw a concept, not the ones that merely correlate."""
import json

import pytest
import torch

from ganpaint import causal
from ganpaint.generator import Generator
from ganpaint.ranking import best_ranking, rank_units
from tests.toy import SoftSegmenter, causal_generator


@pytest.fixture(scope="module")
def gen():
    return Generator(causal_generator(), z_dim=4)


def bright_after_removing(gen, units):
    z = gen.latents(range(64), seed=9)
    _, out = gen.run(z, ["layer1"], stop=True)
    x = out["layer1"].clone()
    x[:, units] = 0
    return float(SoftSegmenter().probabilities(gen.forward_from("layer1", x))[:, 1].mean())


def test_decoy_correlates_but_does_not_draw(gen):
    """The premise of the test world: unit 2 equals unit 0, yet removing it changes nothing."""
    _, out = gen.run(gen.latents(range(8)), ["layer1"], stop=True)
    assert torch.equal(out["layer1"][:, 2], out["layer1"][:, 0])
    assert bright_after_removing(gen, [2]) == pytest.approx(bright_after_removing(gen, []))
    assert bright_after_removing(gen, [0, 1]) < bright_after_removing(gen, []) - 0.1


def test_learned_ranking_puts_drawing_units_first(gen):
    r = causal.learn(gen, SoftSegmenter(), "layer1", "bright", samples=64, steps=150,
                     batch_size=8, progress=False)
    top = [u["unit"] for u in r["ranking"]]
    assert set(top[:2]) == {0, 1}, r["ranking"]
    alpha = {u["unit"]: u["alpha"] for u in r["ranking"]}
    start = float(torch.sigmoid(torch.tensor(causal.THETA_START)))  # every α starts here
    assert alpha[2] < start and min(alpha[0], alpha[1]) > 5 * start
    assert r["left_end"] < r["left_start"]
    # the ranking's top units really remove more than the decoy the IoU ranking would pick
    assert bright_after_removing(gen, top[:1]) < bright_after_removing(gen, [2]) - 0.02


def test_unsplittable_generator_learns_through_hooks(gen):
    """Generators that are not a plain sequence get the edit through a hook, same result."""
    class Wrapped(torch.nn.Module):
        def __init__(self, seq):
            super().__init__()
            self.seq = seq

        def forward(self, z):
            return self.seq(z)
    g2 = Generator(Wrapped(causal_generator()), z_dim=4)
    assert not g2.can_split("seq.layer1")
    r = causal.learn(g2, SoftSegmenter(), "seq.layer1", "bright", samples=32, steps=100,
                     batch_size=8, progress=False)
    assert {u["unit"] for u in r["ranking"][:2]} == {0, 1}


def test_saved_rankings_are_merged_into_the_dissection(tmp_path, gen):
    units = [{"unit": u, "level": 1.0, "levels": {"0.01": 1.0}} for u in range(8)]
    d = {"concepts": ["dark", "bright"], "model": "x", "quantile": 0.01,
         "layers": {"layer1": {"units": 8, "unit_stats": units,
                               "ranking": {"bright": [{"unit": 2, "iou": 0.9}, {"unit": 0, "iou": 0.8}]}}}}
    (tmp_path / "dissection.json").write_text(json.dumps(d))
    from ganpaint.dissect import load_dissection
    assert best_ranking(load_dissection(tmp_path), "bright", "layer1") == "iou"
    with pytest.raises(KeyError, match="rank-causal"):
        rank_units(load_dissection(tmp_path), "bright", "layer1", by="causal")
    causal.learn_all(gen, SoftSegmenter(), d, tmp_path, ["bright"], samples=32, steps=100,
                     batch_size=8, progress=False, log=lambda *a: None)
    loaded = load_dissection(tmp_path)
    assert best_ranking(loaded, "bright", "layer1") == "causal"
    assert best_ranking(loaded, "dark", "layer1") == "iou"
    assert rank_units(loaded, "bright", "layer1", 1, by="iou")[0]["unit"] == 2
    assert rank_units(loaded, "bright", "layer1", 2, by="causal")[0]["unit"] in (0, 1)
    (tmp_path / "causal.json").write_text("{broken")
    with pytest.raises(ValueError, match="causal.json"):
        load_dissection(tmp_path)
