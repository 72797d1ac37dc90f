"""Handler-level tests of the painting app (no browser), on the toy generator."""
import numpy as np
import pytest

from ganpaint.dissect import dissect
from ganpaint.paintapp import CANVAS, VIEW, PaintApp, Session
from tests.test_dissect import source


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    src = source()
    d = dissect(src, ["layer4"], tmp_path_factory.mktemp("d"), samples=48, batch_size=16,
                progress=False, report=False, log=lambda *a: None)
    return PaintApp(src.generator, d, out_dir=tmp_path_factory.mktemp("out"))


def stroke_layer(y0, y1, x0, x1):
    layer = np.zeros((CANVAS, CANVAS, 4), np.uint8)  # the brush canvas's resolution
    layer[y0:y1, x0:x1] = (255, 48, 144, 255)
    return layer


def test_new_scene(app):
    editor, session, grid, path, msg = app.new_scene(3)
    assert editor["background"].shape == (CANVAS, CANVAS, 3) and editor["composite"] is None
    assert session.seed == 3 and session.strokes == []
    assert grid.shape == (VIEW, VIEW, 3) and path.endswith(".png")


def test_paint_changes_inside_and_undo_restores(app):
    editor, session, *_ = app.new_scene(4)
    before = editor["background"].astype(int)
    cell = CANVAS // 8
    editor = {**editor, "layers": [stroke_layer(0, cell, 0, cell)]}  # top-left grid cell
    concept = app.concepts[0]
    ed2, s2, *_, msg = app.paint(editor, session, concept, "remove", "high (20 units)", 1.0)
    after = ed2["background"].astype(int)
    assert len(s2.strokes) == 1 and session.strokes == []  # the old state is not mutated
    diff = np.abs(after - before).sum(-1)
    assert diff[:cell, :cell].mean() > 1
    assert diff[CANVAS // 2:, CANVAS // 2:].max() == 0  # far outside the receptive field
    ed3, s3, *_ = app.undo(s2)
    assert np.array_equal(ed3["background"], editor["background"]) and s3.strokes == []


def test_empty_stroke_is_reported(app):
    editor, session, *_ = app.new_scene(5)
    *_, msg = app.paint(editor, session, app.concepts[0], "draw", "low (4 units)", 1.0)
    assert "nothing painted" in msg


def test_sessions_are_independent(app):
    ea, sa, *_ = app.new_scene(6)
    eb, sb, *_ = app.new_scene(6)
    ea2, sa2, *_ = app.paint({**ea, "layers": [stroke_layer(0, CANVAS, 0, CANVAS)]}, sa,
                             app.concepts[0], "remove", "high (20 units)", 1.0)
    eb2, *_ = app.reset(sb)
    assert not np.array_equal(ea2["background"], eb2["background"])
    assert np.array_equal(eb2["background"], eb["background"])


def test_units_and_ablation_views(app):
    items, table = app.unit_gallery(app.concepts[0], top=3)
    assert len(items) == len(table) <= 3 and items[0][0].shape[0] == 96
    assert app.unit_concepts(0)[0][0] in app.concepts + ["dark", "mid", "bright", "red"]
    with pytest.raises(ValueError):
        app.unit_concepts(999)
    before, after = app.ablate_view(app.concepts[0], 8, 0)
    assert before.shape == after.shape and not np.array_equal(before, after)
