import pytest
import torch

from ganpaint.core.intervene import Stroke, apply_strokes, pool_mask
from ganpaint.core.names import UnknownNameError


def z(p, n=2):
    return p.generator.latents(range(n), seed=5)


def test_empty_mask_changes_nothing(painter):
    base = painter.render(z(painter))
    s = Stroke(list(range(8)), torch.zeros(16, 16))
    assert torch.equal(painter.render(z(painter), [s]), base)


def test_ablation_stays_in_receptive_field(painter):
    base = painter.render(z(painter))
    mask = torch.zeros(8, 8)
    mask[0, 0] = 1
    out = painter.render(z(painter), [Stroke(list(range(8)), mask)])
    diff = (out - base).abs().sum(1)  # (N, 16, 16)
    assert diff[:, :2, :2].min() > 0  # the edited cell changed
    # layer4 cell (0,0) covers pixels 0-1; upsample + two 3×3 convs reach at most pixel 3
    assert diff[:, 4:, :].max() == 0 and diff[:, :, 4:].max() == 0


def test_cached_equals_full_pass(painter):
    mask = torch.rand(32, 32) > 0.5
    strokes = [painter.stroke("red", mask.float(), "draw", 3, 2.0),
               painter.stroke("dark", torch.ones(4, 4), "remove", 2)]
    cached = painter.render(z(painter), strokes, cached=True)
    full = painter.render(z(painter), strokes, cached=False)
    assert painter.generator.can_split("layer4")
    assert torch.allclose(cached, full, atol=1e-6)


def test_later_stroke_wins(painter):
    units, m = [0, 1, 2], torch.ones(8, 8)
    draw = Stroke(units, m, torch.tensor([5.0, 5.0, 5.0]))
    remove = Stroke(units, m)
    x = torch.randn(1, 8, 8, 8)
    a = apply_strokes(x, [draw, remove])
    b = apply_strokes(x, [remove, draw])
    assert torch.equal(a, apply_strokes(x, [remove]))
    assert torch.equal(b[:, :3], torch.full((1, 3, 8, 8), 5.0))
    assert torch.equal(a[:, 3:], x[:, 3:])


def test_partial_mask_blends():
    x = torch.ones(1, 2, 2, 2)
    out = apply_strokes(x, [Stroke([0], torch.full((2, 2), 0.25), torch.tensor([3.0]))])
    assert torch.allclose(out[0, 0], torch.full((2, 2), 1 * 0.75 + 3 * 0.25))


def test_per_sample_masks(painter):
    m = torch.zeros(2, 8, 8)
    m[1, 4:, 4:] = 1
    out = painter.render(z(painter), [Stroke(list(range(8)), m)])
    base = painter.render(z(painter))
    assert torch.equal(out[0], base[0]) and not torch.equal(out[1], base[1])


def test_mask_pooling_is_max():
    m = torch.zeros(64, 64)
    m[10, 10] = 1
    p = pool_mask(m, (8, 8))
    assert p[1, 1] == 1 and p.sum() == 1


def test_bad_inputs(painter):
    with pytest.raises(UnknownNameError, match="Valid concepts"):
        painter.stroke("tree", torch.ones(8, 8))
    with pytest.raises(ValueError, match="unit out of range"):
        painter.render(z(painter), [Stroke([99], torch.ones(8, 8))])
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        painter.render(z(painter), [Stroke([0], torch.ones(1, 1, 8, 8))])
    with pytest.raises(ValueError, match="per-sample masks"):
        painter.render(z(painter), [Stroke([0], torch.ones(3, 8, 8))])
    with pytest.raises(ValueError, match="action"):
        painter.stroke("red", torch.ones(8, 8), action="smudge")


def test_remove_stroke_switches_off_the_units_active_under_it(painter):
    """Given the features it edits, a remove stroke of a learned ranking picks the units with
    the largest √α × activation in its cells: zeroing a unit that is already off there would
    change nothing, whatever its rank."""
    import copy

    from ganpaint.core.dissection import Dissection
    from ganpaint.core.intervene import Painter
    summary = copy.deepcopy(painter.dissection.summary)
    concept = summary["concepts"][0]
    summary["layers"]["layer4"]["causal_local"] = {concept: {"local": True, "ranking": [
        {"unit": 0, "alpha": 0.9}, {"unit": 1, "alpha": 0.8}, {"unit": 2, "alpha": 0.1}]}}
    p = Painter(painter.generator, Dissection(summary), "layer4")
    assert p.ranking(concept, "remove") == "local"
    mask = torch.zeros(8, 8)
    mask[2:5, 2:5] = 1
    x = torch.ones(1, 8, 8, 8)
    x[0, 0, 2:5, 2:5] = 0  # the top-ranked unit is off under the stroke
    x[0, 1], x[0, 2] = 3.0, 5.0  # √α × activation: unit 1 2.7, unit 2 1.6
    fixed = p.stroke(concept, mask, "remove", 1, feather=0)
    here = p.stroke(concept, mask, "remove", 1, features=x, feather=0)
    assert fixed.units == [0] and here.units == [1]
    assert p.stroke(concept, mask, "remove", 2, features=x).units == [1, 2]
    assert torch.equal(apply_strokes(x, [fixed]), x)  # the fixed choice changes nothing here
    assert not torch.equal(apply_strokes(x, [here]), x)
    with pytest.raises(ValueError, match="one scene"):
        p.stroke(concept, mask, "remove", 1, features=x.repeat(2, 1, 1, 1))
    # drawing keeps the ranking's order
    assert p.stroke(concept, mask, "draw", 1, features=x).units == p.dissection.top_units(
        concept, 1, p.ranking(concept, "draw"), "layer4")


def test_a_soft_edge_reaches_the_cells_around_a_stroke_at_its_fraction(painter):
    from ganpaint.core.intervene import FEATHER, Stroke
    x = torch.ones(1, 2, 8, 8)
    cell = torch.zeros(8, 8)
    cell[3, 3] = 1
    out = apply_strokes(x, [Stroke([0], cell, None, 0.5)])[0]
    assert out[0, 3, 3] == 0  # ablated in the cell
    ring = out[0, 2:5, 2:5].clone()
    ring[1, 1] = 0.5
    assert torch.equal(ring, torch.full((3, 3), 0.5))  # half-ablated around it
    assert out[0].sum() == 64 - 1 - 8 * 0.5 and torch.equal(out[1], x[0, 1])  # nothing else
    hard = apply_strokes(x, [Stroke([0], cell, None)])[0]
    assert hard[0].sum() == 63
    concept = painter.dissection.summary["concepts"][0]
    assert painter.stroke(concept, cell, "remove", 1).feather == FEATHER  # the app's edge by default
    with pytest.raises(ValueError, match="feather"):
        painter.stroke(concept, cell, "remove", 1, feather=1.5)
