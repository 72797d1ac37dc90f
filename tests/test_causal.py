"""Causal rankings find the units that draw a concept, not the ones that merely correlate."""
import json

import pytest
import torch

from ganpaint.core import causal
from ganpaint.adapters.generator import Generator
from tests.toy import SoftSegmenter, causal_generator, context_generator


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


@pytest.mark.slow
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


def test_local_ranking_finds_the_units_that_draw_where_they_are():
    """Unit 1 brightens every pixel from its mean over the map, unit 0 only where it is. Removing
    a concept everywhere needs unit 1; removing it inside a stroke needs unit 0."""
    gen = Generator(context_generator(), z_dim=4)
    seg = SoftSegmenter()
    kw = dict(samples=64, steps=150, batch_size=8, penalty=0.05, progress=False)
    everywhere = causal.learn(gen, seg, "layer1", "bright", **kw)
    local = causal.learn(gen, seg, "layer1", "bright", local=True, **kw)
    assert everywhere["ranking"][0]["unit"] == 1 and local["ranking"][0]["unit"] == 0
    assert not everywhere["local"] and local["local"]

    z = gen.latents(range(64), seed=9)
    x = gen.run(z, ["layer1"], stop=True)[1]["layer1"]
    where = seg.probabilities(gen.forward_from("layer1", x)).argmax(1) == 1
    assert 0 < where.float().mean() < 0.5  # brightness is local: a stroke can cover it

    def bright_left(unit, cells):  # zero one unit at the given cells
        y = x.clone()
        y[:, unit][cells] = 0
        return float(seg.probabilities(gen.forward_from("layer1", y))[:, 1][where].mean())
    everywhere_cells = torch.ones_like(where)
    assert bright_left(1, everywhere_cells) < bright_left(0, everywhere_cells) - 0.05
    assert bright_left(0, where) < bright_left(1, where) - 0.02


def test_insertion_ranking_finds_the_units_that_draw_where_they_are_inserted():
    """In the context world, unit 1 removes the most brightness, but inserted in one cell it
    brightens the mirrored cell, away from the dab; unit 0 brightens the dab itself. Drawing
    needs unit 0 first, and a decoy unit that draws nothing stays at the bottom."""
    gen = Generator(context_generator(), z_dim=4)
    kw = dict(samples=64, steps=150, batch_size=8, progress=False)
    insert = causal.learn(gen, SoftSegmenter(), "layer1", "bright", insert=True, **kw)
    removal = causal.learn(gen, SoftSegmenter(), "layer1", "bright", penalty=0.05, **kw)
    assert [u["unit"] for u in insert["ranking"][:2]] == [0, 1]
    assert removal["ranking"][0]["unit"] == 1
    assert insert["kind"] == "insert" and not insert["local"]
    assert insert["gain_end"] > insert["gain_start"] + 0.3  # the dabs draw more as α is learned
    decoy = causal.learn(Generator(causal_generator(), z_dim=4), SoftSegmenter(), "layer1",
                         "bright", insert=True, **kw)
    assert {u["unit"] for u in decoy["ranking"][:2]} == {0, 1}
    alpha = {u["unit"]: u["alpha"] for u in decoy["ranking"]}
    assert alpha[2] < 0.01 and min(alpha[0], alpha[1]) > 10 * alpha[2]
    with pytest.raises(ValueError, match="not both"):
        causal.learn(gen, SoftSegmenter(), "layer1", "bright", insert=True, local=True, **kw)


def test_insertion_sites_are_where_the_concept_would_go():
    """Labels 0 sky, 1 wall, 2 door on a 4×4 map of 2×2 cells: the door sits in wall, so wall
    cells weigh most, sky cells nothing, and the door's own cell nothing (it is drawn there)."""
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, 4:] = 1           # wall on the lower half
    labels[0, 6:8, 2] = 2       # a door in cell (3, 1)
    w = causal.insertion_sites(labels, 2, 3, (4, 4))[0]
    assert w[3, 1] == 0 and w[0, 0] == 0 and w[2, 0] > 0
    expected = torch.ones(2, 4)
    expected[1, 1] = 0
    assert torch.allclose(w[2:], expected) and torch.all(w[:2] == 0)
    whole = torch.full((1, 8, 8), 2)  # a concept that fills its cells has no context
    whole[0, :4] = 0
    assert torch.equal(causal.insertion_sites(whole, 2, 3, (4, 4))[0] > 0,
                       torch.arange(4)[:, None].expand(4, 4) < 2)


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
    from ganpaint.core.dissection import Dissection
    assert Dissection.load(tmp_path).best_ranking("bright", "layer1") == "iou"
    with pytest.raises(ValueError, match="rank-causal"):
        Dissection.load(tmp_path).rank("bright", "causal", "layer1")
    causal.learn_all(gen, SoftSegmenter(), Dissection.load(tmp_path), ["bright"], samples=32, steps=100,
                     batch_size=8, progress=False, log=lambda *a: None)
    loaded = Dissection.load(tmp_path)
    assert loaded.best_ranking("bright", "layer1") == "causal"
    assert loaded.best_ranking("dark", "layer1") == "iou"
    assert loaded.rank("bright", "iou", "layer1", 1)[0]["unit"] == 2
    assert loaded.rank("bright", "causal", "layer1", 2)[0]["unit"] in (0, 1)
    assert loaded.best_ranking("bright", "layer1", local=True) == "causal"  # the fallback
    with pytest.raises(ValueError, match="--local"):
        loaded.rank("bright", "local", "layer1")
    causal.learn_all(gen, SoftSegmenter(), Dissection.load(tmp_path), ["bright"], samples=32, steps=20,
                     batch_size=8, progress=False, log=lambda *a: None, local=True)
    assert json.loads((tmp_path / "causal_local.json").read_text())["layer1"]["bright"]["local"]
    loaded = Dissection.load(tmp_path)
    assert loaded.best_ranking("bright", "layer1", local=True) == "local"
    assert loaded.best_ranking("bright", "layer1") == "causal"
    assert len(loaded.rank("bright", "local", "layer1", 3)) == 3
    assert loaded.best_ranking("bright", "layer1", local=True, insert=True) == "local"  # fallback
    with pytest.raises(ValueError, match="--insert"):
        loaded.rank("bright", "insert", "layer1")
    causal.learn_all(gen, SoftSegmenter(), loaded, ["bright"], samples=32, steps=20, batch_size=8,
                     progress=False, log=lambda *a: None, insert=True)
    loaded = Dissection.load(tmp_path)
    assert loaded.best_ranking("bright", "layer1", local=True, insert=True) == "insert"
    assert loaded.best_ranking("bright", "layer1", local=True) == "local"
    from ganpaint.core.intervene import Painter
    painter = Painter(gen, loaded, "layer1")
    assert (painter.ranking("bright", "draw"), painter.ranking("bright", "remove")) == ("insert", "local")
    draw = painter.stroke("bright", torch.ones(4, 4), "draw", 2)
    assert draw.units == loaded.top_units("bright", 2, "insert", "layer1")
    (tmp_path / "causal.json").write_text("{broken")
    with pytest.raises(ValueError, match="causal.json"):
        Dissection.load(tmp_path)
