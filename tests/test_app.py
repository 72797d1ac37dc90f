"""Handler-level tests of the painting app (no browser), on the toy generator."""
import numpy as np
import pytest
from PIL import Image

from ganpaint.core.dissect import dissect
from ganpaint.core.upsample import upsampled
from ganpaint.apps.paintapp import CANVAS, GRID_PX, VIEW, PaintApp, Session
from tests.toy import source


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    src = source()
    d = dissect(src, ["layer4"], tmp_path_factory.mktemp("d"), samples=48, batch_size=16,
                progress=False, log=lambda *a: None)
    return PaintApp(src.generator, d, out_dir=tmp_path_factory.mktemp("out"))


def stroke_layer(y0, y1, x0, x1):
    layer = np.zeros((CANVAS, CANVAS, 4), np.uint8)  # the brush canvas's resolution
    layer[y0:y1, x0:x1] = (255, 48, 144, 255)
    return layer


def test_new_scene(app):
    editor, session, grid, compare, msg = app.new_scene(3)
    assert editor["background"].shape == (CANVAS, CANVAS, 3) and editor["composite"] is None
    assert session.seed == 3 and session.strokes == []
    assert grid.shape == (GRID_PX, GRID_PX, 3)
    assert compare is None  # before/after off until asked
    path = app.download(session)  # written when asked: the scene at VIEW px
    shown = np.asarray(Image.fromarray(np.asarray(Image.open(path))).resize((CANVAS, CANVAS), Image.LANCZOS))
    assert path.endswith(".png") and np.asarray(Image.open(path)).shape == (VIEW, VIEW, 3)
    assert np.abs(shown.astype(int) - editor["background"]).mean() < 3  # the same scene


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
    _, items, table, _ = app.concept_units(app.concepts[0], top=3)
    assert len(items) == len(table) <= 3 and items[0][0].shape == (192, 192, 3)  # 2×2 scenes
    # each unit's concepts are its IoUs, highest first, computed here from scratch: the unit's
    # mask (its upsampled map above its level) against each concept's pixels, 48 samples
    src = source()
    layer, stats = app.painter.layer, app.dissection["layers"][app.painter.layer]["unit_stats"]
    acts, labels, _ = src.batch(list(range(48)), [layer])
    maps = upsampled(acts[layer], labels.shape[-1])
    for unit in (0, 3, 7):
        above = maps[:, unit] > stats[unit]["level"]
        exact = {c: ((above & (labels == i)).sum() / (above | (labels == i)).sum()).item()
                 for i, c in enumerate(src.concepts)}
        rows = app.unit_concepts(unit)
        ious = [v for _, v in rows]
        assert ious == sorted(ious, reverse=True) and ious[0] == pytest.approx(max(exact.values()), abs=0.005)
        assert all(v == pytest.approx(exact[c], abs=0.005) for c, v in rows), (unit, rows, exact)
    with pytest.raises(ValueError):
        app.unit_concepts(999)
    before, after = app.ablate_view(app.concepts[0], 8, 0)
    assert before.shape == after.shape and not np.array_equal(before, after)


def test_grid_toggle_draws_on_the_canvas_only_and_keeps_the_edit(app):
    editor, session, *_ = app.new_scene(7)
    painted = {**editor, "layers": [stroke_layer(0, CANVAS // 8, 0, CANVAS // 8)]}
    ed, s1, *_ = app.paint(painted, session, app.concepts[0], "remove", "high (20 units)", 1.0)
    ed_grid, s2, _, _, msg = app.show_grid(True, s1)
    path1, path2 = app.download(s1), app.download(s2)
    assert s2.grid and s2.strokes == s1.strokes and not s1.grid and "shown" in msg
    step = CANVAS // 8
    lines = np.abs(ed_grid["background"].astype(int) - ed["background"].astype(int)).sum(-1)
    assert lines[step].min() > 0 and lines[:, step].min() > 0  # cell borders drawn
    assert lines[step // 2, step // 2] == 0  # cell insides untouched
    assert np.array_equal(np.asarray(Image.open(path1)), np.asarray(Image.open(path2)))  # the download stays clean
    # the grid stays on through undo and a new scene, and goes away when turned off
    ed_undo, s3, *_ = app.undo(s2)
    assert s3.grid and s3.strokes == []
    _, s4, *_ = app.new_scene(8, s3)
    assert s4.grid
    ed_off, s5, *_ = app.show_grid(False, s2)
    assert not s5.grid and np.array_equal(ed_off["background"], ed["background"])


def test_handler_errors_reach_the_user(app):
    """Every handler is guarded: an error is a gr.Error carrying the message (Gradio shows a bare
    "Error" for other exceptions)."""
    import gradio as gr
    from ganpaint.apps.paintapp import build_demo, guard
    with pytest.raises(gr.Error, match="unit must be in 0..7"):
        guard(app.unit_concepts)(999)
    with pytest.raises(gr.Error, match="unknown concept 'unicorn'"):
        guard(app.paint)({"layers": [stroke_layer(0, 8, 0, 8)]}, Session(), "unicorn", "draw",
                         "low (4 units)", 1.0)
    demo = build_demo(app)
    fns = [f.fn for f in demo.fns.values() if f.fn is not None]  # not the page's own js steps
    assert len(fns) >= 9 and all(getattr(f, "__wrapped__", None) for f in fns)
    assert "new_scene" in {f.__name__ for f in fns}  # api names (/new_scene) unchanged


def test_replies_leave_a_bounded_number_of_files(app, monkeypatch):
    import ganpaint.apps.paintapp as pa
    from ganpaint.apps.paintapp import build_demo
    monkeypatch.setattr(pa, "KEEP_FILES", 3)
    paths = [app.download(app.new_scene(i)[1]) for i in range(7)]
    left = sorted(str(p) for p in app.out_dir.glob("*.png"))
    assert left == sorted(paths[-3:])  # the newest, still served; the rest deleted
    assert build_demo(app).delete_cache == pa.DELETE_CACHE  # Gradio's own copies expire too


def test_oversized_stroke_layers_are_refused(app, tmp_path, monkeypatch):
    from ganpaint.apps.paintapp import MAX_LAYER, limit_decoding
    big = np.zeros((MAX_LAYER + 1, 8, 4), np.uint8)
    with pytest.raises(ValueError, match=f"at most {MAX_LAYER}×{MAX_LAYER}"):
        app.brush_mask({"layers": [big]})
    # what Gradio decodes (with PIL) is refused from the header, before any pixel is decoded
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after
    limit_decoding()  # what the server does at start
    Image.new("1", (MAX_LAYER + 8, MAX_LAYER + 8)).save(tmp_path / "huge.png")
    with pytest.raises(Image.DecompressionBombError):
        Image.open(tmp_path / "huge.png")


def test_the_app_opens_on_a_scene_with_a_building_and_a_tree():
    """The first seed whose scene the segmenter sees holding both; earlier seeds lack one."""
    from ganpaint.apps import registry
    from ganpaint.core.checkpoint import MODELS
    from ganpaint.core.dissection import Dissection
    from ganpaint.world.labels import INDEX
    seg = registry.load_segmenter("scenes")
    app = PaintApp(registry.load_generator("scenes"), Dissection.load(MODELS / "dissection"), seg)
    first = app.first_seed(limit=40)
    lab = seg.segment(app.painter.render(app.painter.generator.latents(range(first + 1), 0)))
    share = lambda l, c: (l == INDEX[c]).float().mean()  # noqa: E731
    assert share(lab[first], "building") >= 0.10 and share(lab[first], "tree") >= 0.04
    assert all(share(l, "building") < 0.10 or share(l, "tree") < 0.04 for l in lab[:first])
    assert PaintApp(app.painter.generator, app.dissection).first_seed() == 0  # no segmenter


def test_units_tab_ranks_by_iou_or_by_causal_effect():
    """On the shipped dissection (which has learned rankings) the two orders differ: by IoU the
    units are the concept's highest-IoU ones, by causal effect the ranking strokes use."""
    from ganpaint.apps import registry
    from ganpaint.core.checkpoint import MODELS
    from ganpaint.core.dissection import Dissection
    d = Dissection.load(MODELS / "dissection")
    app = PaintApp(registry.load_generator("scenes"), d)
    layer = app.painter.layer
    head, items, table, by_iou = app.concept_units("tree", top=4, by="iou")
    assert by_iou == [r["unit"] for r in d.rank("tree", "iou", layer, 4)] and "iou ranking" in head
    ious = [r["iou"] for r in d.rank("tree", "iou", layer, None)]
    assert [t[2] for t in table] == [round(v, 4) for v in sorted(ious, reverse=True)[:4]]
    learned = d.best_ranking("tree", layer)
    head, items, table, by_effect = app.concept_units("tree", top=4, by="causal")
    assert learned != "iou" and f"{learned} ranking" in head
    assert by_effect == d.top_units("tree", 4, learned, layer) and by_effect != by_iou
    with pytest.raises(ValueError, match="'iou' or 'causal'"):
        app.concept_units("tree", by="alpha")
    # after a stroke, the tab shows its units and says why they need not outline the concept
    editor, session, *_ = app.new_scene(0)
    painted = {**editor, "layers": [stroke_layer(0, CANVAS // 4, 0, CANVAS // 4)]}
    _, s1, *_ = app.paint(painted, session, "tree", "remove", "low (4 units)", 1.0)
    concept, head, *_ = app.units_tab(s1, "door")
    assert concept == "tree" and "local ranking" in head and "need not cover tree" in head


def test_a_stroke_applies_on_release_and_replacing_the_canvas_is_no_new_stroke(app):
    """The editor's input event (a stroke ended) paints; the same event fired by the server's
    own canvas replacement (no stroke layer) changes nothing, so there is no feedback loop."""
    import gradio as gr
    editor, session, *_ = app.new_scene(9)
    out = app.stroke_on_release(editor, session, app.concepts[0], "remove", "low (4 units)", 1.0)
    assert len(out) == len(app.new_scene(9)) and all(o == gr.skip() for o in out)
    painted = {**editor, "layers": [stroke_layer(0, CANVAS // 8, 0, CANVAS // 8)]}
    ed1, s1, *_, msg1 = app.stroke_on_release(painted, session, app.concepts[0], "remove",
                                               "low (4 units)", 1.0)
    ed2, s2, *_, msg2 = app.paint(painted, session, app.concepts[0], "remove", "low (4 units)", 1.0)
    assert len(s1.strokes) == 1 and np.array_equal(ed1["background"], ed2["background"])
    assert msg1 == msg2 and ed1["layers"] == []  # the applied stroke leaves the canvas


def test_each_stroke_lists_the_units_it_switched(app):
    editor, session, *_ = app.new_scene(10)
    c = app.concepts[0]
    painted = {**editor, "layers": [stroke_layer(0, CANVAS // 4, 0, CANVAS // 4)]}
    _, s1, *_, msg = app.paint(painted, session, c, "draw", "low (4 units)", 1.0)
    rows = app.dissection.rank(c, app.painter.ranking(c), app.painter.layer, 4)
    switched = app.painter.stroke(c, s1.strokes[0]["mask"], "draw", 4).units
    assert [r["unit"] for r in rows] == list(switched)  # what the engine really switched
    for r in rows:
        assert f"{r['unit']} (#{r['rank']}, IoU {r['iou']:.3f})" in msg, msg
    # the Units tab opens on them (the toy dissection has no causal ranking: IoU)
    concept, head, items, table, units = app.units_tab(s1, app.concepts[-1])
    assert concept == c and units == [r["unit"] for r in rows] and "last stroke" in head
    assert "need not cover" not in head  # units ranked by IoU do outline it
    assert [t[1] for t in table] == units and len(items) == 4
    # without a stroke: the chosen concept's top units
    concept, head, items, table, units = app.units_tab(session, app.concepts[-1])
    ranked = app.dissection.rank(app.concepts[-1], layer=app.painter.layer, top=12)
    assert concept == app.concepts[-1] and units == [r["unit"] for r in ranked]
    strip = items[0][0]
    assert strip.shape == (2 * 96, 2 * 96, 3) and f"unit {units[0]}" in items[0][1]
    assert f"IoU {ranked[0]['iou']:.3f}" in items[0][1] and "label " in items[0][1]


def test_before_after_shows_the_original_beside_the_edit_and_labels_on_request(app):
    from ganpaint.apps.paintapp import PaintApp
    from tests.toy import ToySegmenter
    editor, session, *_ = app.new_scene(11)
    painted = {**editor, "layers": [stroke_layer(0, CANVAS, 0, CANVAS // 2)]}
    _, s1, *_ = app.paint(painted, session, app.concepts[0], "remove", "high (20 units)", 1.0)
    *_, cmp, msg = app.set_compare(True, True, s1)  # no segmenter: no labels
    assert "before/after shown" in msg and "segmentation" not in msg
    half = VIEW // 2
    orig, edit = app.view(app.image(session), half), app.view(app.image(s1), half)
    body = cmp[20:20 + half]
    assert np.array_equal(body[:, :half], orig) and np.array_equal(body[:, half:], edit)
    seg_app = PaintApp(app.painter.generator, app.dissection, segmenter=ToySegmenter(),
                       out_dir=app.out_dir)
    *_, cmp2, msg2 = seg_app.set_compare(True, True, s1)
    assert "with segmentation" in msg2 and cmp2.shape[0] > half + 20 + half
    colours, lab = seg_app.segmentation(seg_app.image(s1))
    expect = np.asarray(Image.fromarray(colours).resize((half, half), Image.NEAREST))
    assert np.array_equal(cmp2[20 + half:20 + 2 * half, half:], expect)
    assert np.array_equal(colours, seg_app.seg_colors[lab])
    # colours by concept name, from assets/labels.json (any segmenter's label order)
    from ganpaint.world.labels import COLORS, lookup

    class TreeSky(ToySegmenter):
        concepts = ["tree", "sky", "dark", "red"]
    tree_app = PaintApp(app.painter.generator, app.dissection, segmenter=TreeSky(), out_dir=app.out_dir)
    tree_app.segmentation(np.zeros((8, 8, 3), np.uint8))
    assert np.array_equal(tree_app.seg_colors[0], COLORS[lookup("tree")])
    assert np.array_equal(tree_app.seg_colors[1], COLORS[lookup("sky")])
    *_, off, msg3 = seg_app.set_compare(False, True, s1)
    assert off is None and "hidden" in msg3


def test_trash_icon_restores_the_scene(app):
    editor, session, *_ = app.new_scene(12)
    painted = {**editor, "layers": [stroke_layer(0, CANVAS // 8, 0, CANVAS // 8)]}
    ed1, s1, *_ = app.paint(painted, session, app.concepts[0], "remove", "high (20 units)", 1.0)
    ed2, s2, *_, msg = app.clear(s1)
    assert np.array_equal(ed2["background"], ed1["background"]) and s2.strokes == s1.strokes
    assert "restored" in msg


def test_concurrent_renders_are_batched_and_exact(app):
    """Renders asked for at once go through one generator call, and each equals its render
    alone."""
    import threading
    app.batcher.sizes.clear()
    c = app.concepts[0]
    sessions = []
    for i in range(8):
        editor, s, *_ = app.new_scene(20 + i)
        _, s, *_ = app.paint({**editor, "layers": [stroke_layer(0, 32 * (i % 4 + 1), 0, 64)]}, s,
                             c, "remove" if i % 2 else "draw", "medium (10 units)", 1.0)
        sessions.append(s)
    alone = [app.render_batch([(s.seed, app.strokes(s))])[0] for s in sessions]
    got = [None] * 8
    go = threading.Barrier(8)

    def run(i):
        go.wait()
        got[i] = app.image(sessions[i])
    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    app.batcher.sizes.clear()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(a, b) for a, b in zip(alone, got))
    assert max(app.batcher.sizes) > 1 and sum(app.batcher.sizes) == 8


def test_the_page_wires_paint_on_release_undo_keys_and_the_trash_icon(app):
    from ganpaint.apps.paintapp import HEAD, build_demo
    demo = build_demo(app)
    wired = {(t[1], f.fn.__name__) for f in demo.fns.values() if f.fn for t in f.targets}
    assert ("input", "stroke_on_release") in wired and ("clear", "clear") in wired
    assert ("select", "open_units") in wired and ("select", "pick_unit") in wired
    assert "keydown" in HEAD and "#undo" in HEAD and "'z'" in HEAD.replace('"', "'")


@pytest.mark.slow
def test_upload_paints_on_your_image(app, tmp_path):
    """'upload your image': inverted, painted like a scene, the edit composited into the upload;
    the download is the upload at its own size, unchanged outside the edit."""
    from ganpaint.apps.invert import ImageError
    z = app.painter.generator.latents([11])
    scene = app.view(to_uint8(app.painter.render(z)), 96)  # a picture the model can draw
    photo = np.concatenate([scene, scene[:, :24]], 1)  # 120×96: not square
    path = tmp_path / "mine.png"
    Image.fromarray(photo).save(path)
    editor, session, _, _, msg = app.upload(str(path), Session(seed=4))
    download = app.download(session)
    assert session.photo is not None and session.seed == 4
    assert "centre-cropped from 120×96 to 96×96" in msg and "dB PSNR" in msg
    got = np.asarray(Image.open(download))
    assert got.shape == photo.shape and np.array_equal(got, photo)  # no stroke: the upload itself
    inv = session.photo  # optimisation and adaptation improved on the best random start
    assert inv.psnr >= inv.stats["psnr_start"] + 1 and f"{inv.psnr:.1f} dB" in msg
    cell = CANVAS // 8
    ed2, s2, _, _, msg2 = app.paint({**editor, "layers": [stroke_layer(0, cell, 0, cell)]},
                                    session, app.concepts[0], "remove", "high (20 units)", 1.0)
    download2 = app.download(s2)
    edited = np.asarray(Image.open(download2)).astype(int)
    diff = np.abs(edited - photo).sum(-1)
    assert diff[:, 12:108].max() > 0  # the edit reached the crop (x 12..108 of the upload)
    assert diff[:, :12].max() == 0 and diff[:, 108:].max() == 0  # outside the crop: untouched
    assert diff[60:, 70:108].max() == 0  # far from the top-left cell: the upload's pixels
    assert app.undo(s2)[1].photo is session.photo  # undo keeps painting on the upload
    assert app.new_scene(7, s2)[1].photo is None  # a seed goes back to generated scenes
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ImageError, match="not an image"):
        app.upload(str(tmp_path / "notes.txt"), session)


def to_uint8(x):
    from ganpaint.world.scenes import to_uint8_images
    return to_uint8_images(x)[0]


def test_views_are_embedded_in_the_page_and_the_canvas_reads_only_strokes(app, tmp_path):
    """Replies leave no files for the cells and before/after views (PNG data URIs, exact, a new
    number per reply), and the canvas decodes only the brush layers of what the browser sends:
    a background whose cache file has expired breaks nothing."""
    import base64
    import io
    import re
    from gradio.data_classes import FileData
    from gradio.components.image_editor import EditorData
    from ganpaint.apps.components import StrokeCanvas
    from ganpaint.apps.paintapp import embed_views
    editor, session, cells, _, msg = app.new_scene(3)
    out = embed_views(app.new_scene)(3)
    src = re.search(r'src="data:image/png;base64,([^"]+)"', out[2]).group(1)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(src)))), cells)
    assert out[3] == "" and out[4] == msg  # before/after off: nothing embedded
    again = embed_views(app.new_scene)(3)[2]
    number = lambda h: int(re.search(r'data-reply="(\d+)"', h).group(1))  # noqa: E731
    assert number(again) > number(out[2])  # the page can tell a new reply from the last one
    layer = tmp_path / "layer.png"
    Image.fromarray(stroke_layer(0, 32, 0, 32)).save(layer)
    canvas = StrokeCanvas(type="numpy")
    value = canvas.preprocess(EditorData(background=FileData(path=str(tmp_path / "expired.png")),
                                         layers=[FileData(path=str(layer))],
                                         composite=FileData(path=str(tmp_path / "gone.png"))))
    assert value["background"] is None and value["composite"] is None
    assert app.brush_mask(value)[:32, :32].all() and app.brush_mask(value).sum() == 32 * 32
    assert canvas.get_block_name() == "imageeditor"  # drawn as Gradio's own editor
    # a handler's update (gr.skip() on the editor) makes Gradio build a fresh instance of the
    # class for the session: it must still be the stroke canvas
    fresh = type(canvas)(**{**canvas.constructor_args, "render": False})
    assert fresh.preprocess.__func__ is StrokeCanvas.preprocess
    sent = canvas.postprocess({"background": cells, "layers": [], "composite": None})
    assert np.array_equal(np.asarray(Image.open(sent.background.path)), cells)  # lossless


def test_the_reply_cache_keeps_the_newest_and_the_young(tmp_path):
    """The janitor's rule: entries beyond the newest `keep` go, unless younger than `grace` s."""
    import os
    import time
    from ganpaint.apps.serving import prune_cache
    now = time.time()
    for i in range(10):  # entry i is 10·i s old; a folder, as Gradio's hash folders, or a file
        e = tmp_path / f"e{i}"
        if i % 2:
            e.write_bytes(b"x")
        else:
            e.mkdir()
            (e / "scene.png").write_bytes(b"x")
            os.utime(e / "scene.png", (now - 10 * i, now - 10 * i))
        os.utime(e, (now - 10 * i, now - 10 * i))
    assert prune_cache(tmp_path, keep=3, grace=55) == 4  # e3..e5 kept (young), e6..e9 gone
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"e{i}" for i in range(6)]
    assert prune_cache(tmp_path, keep=3, grace=0) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e0", "e1", "e2"]
    assert prune_cache(tmp_path / "missing") == 0
    # a folder of several uploads (one content, several names) counts its files
    (tmp_path / "up").mkdir()
    for f in [tmp_path / "up" / f"layer{i}.png" for i in range(4)] + [tmp_path / "up"]:
        f.exists() or f.write_bytes(b"x")
        os.utime(f, (now - 5, now - 5))  # between e0 and e1
    assert prune_cache(tmp_path, keep=2, grace=0) == 3  # e0 (1 file) kept; up (4) over: it and older go
    assert [p.name for p in tmp_path.iterdir()] == ["e0"]
    # a folder whose file was sent again (Gradio re-touches the file) is as young as that file
    old = tmp_path / "old"
    old.mkdir()
    (old / "scene.png").write_bytes(b"x")
    os.utime(old, (now - 100, now - 100))
    assert prune_cache(tmp_path, keep=0, grace=55) == 0


def test_the_cache_janitor_sleeps_until_a_request_comes(tmp_path):
    """Idle, the janitor makes no pass (no polling); a request wakes it, it prunes to the newest
    `keep` files and sleeps again."""
    import time
    from ganpaint.apps import serving
    for i in range(4):
        (tmp_path / f"e{i}").write_bytes(b"x")
    j = serving.Janitor(tmp_path, period=0.02, keep=1, grace=0)
    try:
        time.sleep(0.3)
        assert j.passes == 0 and len(list(tmp_path.iterdir())) == 4  # nobody painted
        serving.touch()
        deadline = time.time() + 10
        while len(list(tmp_path.iterdir())) > 1 and time.time() < deadline:
            time.sleep(0.02)
        assert len(list(tmp_path.iterdir())) == 1
        (tmp_path / "late").write_bytes(b"x")  # no request since: it stays
        time.sleep(0.3)
        assert len(list(tmp_path.iterdir())) == 2
    finally:
        j.stop()


def test_the_cache_janitor_prunes_a_spared_entry_as_soon_as_it_may_go(tmp_path):
    """An entry spared for its youth goes once its grace ends, not a whole period later."""
    import time
    from ganpaint.apps import serving
    j = serving.Janitor(tmp_path, period=2.0, keep=0, grace=2.4)
    try:
        (tmp_path / "young").write_bytes(b"x")
        t = time.time()
        serving.touch()  # first pass after 2 s: spared (2.0 s old), 0.4 s to go
        while (tmp_path / "young").exists() and time.time() - t < 15:
            time.sleep(0.02)
        assert not (tmp_path / "young").exists()
        assert j.passes == 2 and time.time() - t < 4.0  # a second period would end at 4 s
    finally:
        j.stop()


def test_an_upload_does_not_hold_up_other_sessions(app, tmp_path, monkeypatch):
    """While an upload is inverted (about 20 s on the shipped model), other sessions' scenes
    still render: the inversion works on copies of the models, not under the render lock."""
    import threading
    import ganpaint.apps.invert as inversion
    real, seen = inversion.invert, {}

    def watched(generator, *args, **kwargs):
        other = threading.Thread(target=lambda: seen.setdefault("other", app.new_scene(2)))
        other.start()
        other.join(60)
        seen["shared"] = generator is app.painter.generator
        return real(generator, *args, **{**kwargs, "starts": 1, "z_steps": 2, "feature_steps": 2,
                                         "adapt_steps": 2})
    monkeypatch.setattr(inversion, "invert", watched)
    scene = app.view(to_uint8(app.painter.render(app.painter.generator.latents([11]))), 64)
    Image.fromarray(scene).save(tmp_path / "mine.png")
    editor, session, *_ = app.upload(str(tmp_path / "mine.png"), Session())
    assert "other" in seen and seen["other"][1].seed == 2 and not seen["shared"]
    assert session.photo is not None and editor["background"].shape == (CANVAS, CANVAS, 3)
