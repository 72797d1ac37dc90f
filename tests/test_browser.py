"""The app in a real browser (Debian's headless Chromium driven by Playwright) and through
gradio_client, against `python app.py` on a free localhost port with the shipped model."""
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.toy import free_port, start_app

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def server():
    try:
        proc, url = start_app(free_port())
    except RuntimeError as e:
        pytest.fail(str(e))
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def model():
    from ganpaint.apps import registry
    from ganpaint.core.dissection import Dissection
    from ganpaint.core.intervene import Painter
    d = Dissection.load(ROOT / "models" / "dissection")
    g = registry.load_generator("scenes")
    return Painter(g, d), registry.load_segmenter("scenes")


def find_scene(model, concept, min_cells=3, cover=0.5):
    """The first seed whose unedited scene has `concept` over half of at least `min_cells` cells
    of the grid, and the cells where it covers more than `cover` (an (8, 8) bool array): the
    stroke goes there."""
    painter, seg = model
    c = seg.concepts.index(concept)
    for seed in range(200):
        img = painter.render(painter.generator.latents([seed], 0))
        lab = seg.segment(img)[0]
        share = torch.nn.functional.avg_pool2d((lab == c).float()[None, None], 8)[0, 0]
        if (share > 0.5).sum() >= min_cells:
            return seed, (share > cover).numpy()
    pytest.skip(f"the shipped model drew no {concept} in 200 scenes")


def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("GANPAINT_REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} missing (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright
    pw = sync_playwright().start()
    return pw, pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)


class Page:
    """One user's browser tab on the app."""

    def __init__(self, b, url):
        self.ctx = b.new_context(viewport={"width": 1400, "height": 1000})
        self.pg = self.ctx.new_page()
        self.pg.goto(url)
        self.pg.wait_for_function("document.querySelector('#status textarea') && "
                                  "document.querySelector('#status textarea').value.includes('scene')",
                                  timeout=60000)
        self.pg.wait_for_selector("#grid img", timeout=60000)

    def status(self):
        return self.pg.locator("#status textarea").input_value()

    def reply(self):
        """The number of the last reply shown (every reply's cells view carries a new one)."""
        return self.pg.locator("#grid img").first.get_attribute("data-reply")

    def image(self) -> np.ndarray:
        """The edited scene as a person downloads it: the download button, then the file the
        browser saves."""
        with self.pg.expect_download(timeout=60000) as dl:
            self.pg.locator("#download_btn").click()
        return np.asarray(Image.open(dl.value.path()).convert("RGB"))

    def wait_change(self, action, event="click", timeout=60000):
        """Run `action` and wait until the new scene's link and status are shown.
        `last_wait` is the latency a person sees: from the `event` in the page (a click, or the
        mouse-up that ends a stroke) to that moment, both read from the page's clock
        (Playwright's own bookkeeping, which can take 0.3 s before the click happens, is not
        counted)."""
        old = self.reply()
        old_status = self.status()
        self.pg.evaluate("(ev) => { window.t_click = null; document.addEventListener(ev, "
                         "() => { window.t_click = Date.now(); }, {capture: true}); }", event)
        action()
        self.pg.wait_for_function(
            "([h, s]) => { const a = document.querySelector('#grid img');"
            " const done = a && a.getAttribute('data-reply') !== h && document.querySelector('#status textarea').value !== s;"
            " if (done) window.t_shown = Date.now(); return done; }",
            arg=[old, old_status], timeout=timeout, polling=20)
        self.last_wait = self.pg.evaluate("(window.t_shown - window.t_click) / 1000")
        self.pg.wait_for_timeout(300)

    def load(self, seed):
        if self.pg.locator("#seed input").input_value() == str(seed):
            self.load(seed + 1)  # loading the scene already shown changes nothing to wait for
        self.pg.locator("#seed input").fill(str(seed))
        self.wait_change(lambda: self.pg.locator("#load").click())
        self.pg.wait_for_timeout(1500)  # the canvas redraws its background

    def choose(self, concept, action, strength=None):
        self.pg.locator("#concept input").click()
        self.pg.get_by_role("option", name=concept, exact=True).click()
        self.pg.locator("#action").get_by_text(action, exact=True).click()
        if strength:
            self.pg.locator("#strength").get_by_text(strength, exact=True).click()

    def scene_box(self):
        """(x0, y0, scale): where the 512-px scene is drawn (centred in the canvas, scaled to fit)."""
        self.pg.evaluate("window.scrollTo(0, 0)")  # the box and the screenshot in one frame
        canvas = self.pg.locator("#canvas canvas").first.bounding_box()
        scale = min(canvas["width"], canvas["height"]) / 512 * 0.88
        return (canvas["x"] + canvas["width"] / 2 - 256 * scale,
                canvas["y"] + canvas["height"] / 2 - 256 * scale, scale)

    def canvas(self) -> np.ndarray:
        """What the brush canvas shows of the scene, as a person sees it, at 64 px."""
        x0, y0, scale = self.scene_box()
        png = self.pg.screenshot(clip={"x": x0 + 4, "y": y0 + 4, "width": 512 * scale - 8,
                                       "height": 512 * scale - 8})
        return small(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")))

    def stroke(self, cells):
        """One brush stroke over the centres of the given (8, 8) grid cells (a 4-connected set):
        the pointer walks from cell to neighbouring cell (depth first, back over painted cells),
        so it touches no other cell, and is released at the end."""
        x0, y0, scale = self.scene_box()
        centre = lambda y, x: (x0 + (x + 0.5) * 64 * scale, y0 + (y + 0.5) * 64 * scale)  # noqa: E731
        ys, xs = np.nonzero(cells)
        path, seen = [], set()

        def walk(c):
            seen.add(c)
            path.append(c)
            for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                n = (c[0] + dy, c[1] + dx)
                if 0 <= n[0] < cells.shape[0] and 0 <= n[1] < cells.shape[1] and cells[n] and n not in seen:
                    walk(n)
                    path.append(c)
        walk((int(ys[0]), int(xs[0])))
        assert len(seen) == cells.sum(), "stroke() takes one connected set of cells"
        px, py = centre(*path[0])
        self.pg.mouse.move(px - 6, py)
        self.pg.mouse.down()
        self.pg.mouse.move(px + 6, py, steps=3)
        for c in path[1:]:  # every cell's centre is visited: a few pointer events per cell do
            self.pg.mouse.move(*centre(*c), steps=2)  # (each costs ~0.5 s in headless Chromium)
        self.pg.mouse.up()

    def apply(self):
        self.wait_change(lambda: self.pg.locator("#apply").click())

    def paint(self, cells, attempts=3):
        """One stroke, applied when the mouse is released (no button): `last_wait` is from the
        mouse-up to the new scene shown. If the canvas was still redrawing and took no stroke
        (nothing comes back), wait and stroke again, as a person would."""
        for _ in range(attempts):
            try:
                self.wait_change(lambda: self.stroke(cells), event="pointerup", timeout=20000)
                return
            except PlaywrightTimeout:
                self.pg.wait_for_timeout(2000)
        raise AssertionError("the canvas took no brush stroke")


def component(cells):
    """The largest 4-connected set of the given cells (one stroke paints it)."""
    best = np.zeros_like(cells, bool)
    seen = np.zeros_like(cells, bool)
    for start in zip(*np.nonzero(cells)):
        if seen[start]:
            continue
        part, todo = np.zeros_like(cells, bool), [start]
        while todo:
            c = todo.pop()
            if not (0 <= c[0] < cells.shape[0] and 0 <= c[1] < cells.shape[1]) or seen[c] or not cells[c]:
                continue
            seen[c] = part[c] = True
            todo += [(c[0] + 1, c[1]), (c[0] - 1, c[1]), (c[0], c[1] + 1), (c[0], c[1] - 1)]
        if part.sum() > best.sum():
            best = part
    return best


def small(img):
    """An image at 64 px as float (a 512-px view is first cropped by 4 px, as `Page.canvas`)."""
    im = Image.fromarray(img)
    if im.size == (512, 512):
        im = im.crop((4, 4, 508, 508))
    return np.asarray(im.resize((64, 64), Image.BILINEAR)).astype(float)


def region(cells, pad=0):
    """(512, 512) bool: the given grid cells (dilated by `pad` cells) at view resolution."""
    m = torch.as_tensor(cells, dtype=torch.float32)[None, None]
    if pad:
        m = torch.nn.functional.max_pool2d(m, 2 * pad + 1, 1, pad)
    return torch.nn.functional.interpolate(m, size=(512, 512), mode="nearest")[0, 0].bool().numpy()


def concept_pixels(seg, img, concept, mask):
    x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    lab = seg.segment(x, 512)[0].numpy()
    return int(((lab == seg.concepts.index(concept)) & mask).sum())


def paint_scene(page, model, find, concept, action, strength=None, cover=0.5, where=None):
    """Load a scene with `find` in it and paint `action concept` over the grid cells `find`
    covers (or over `where(cells)`). Returns (cells painted, image before, image after)."""
    seed, cells = find_scene(model, find, cover=cover)
    cells = component(where(cells) if where is not None else cells)
    page.load(seed)
    before = page.image()
    page.choose(concept, action, strength)
    page.paint(cells)
    return cells, before, page.image()


def test_paint_in_browser(server, model):
    """Stroke mechanics: a 'remove tree' stroke over a tree changes the scene inside the stroke
    and not far outside it; the canvas then shows the edited scene (no progress overlay left
    over it) and takes the next stroke at once; undo restores the previous image exactly;
    latency is printed."""
    pw, b = browser()
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        page = Page(b, server)
        cells, before, after = paint_scene(page, model, "tree", "tree", "remove")
        latency = page.last_wait
        diff = np.abs(after.astype(int) - before.astype(int)).sum(-1)
        inside, far = region(cells), ~region(cells, pad=2)
        assert diff[inside].mean() > 5, "the stroke region did not change"
        if far.any():
            assert diff[far].mean() < 0.2 * diff[inside].mean(), "the edit spread far outside the stroke"
        assert "1 strokes" in page.status()
        page.pg.wait_for_timeout(500)
        shown = page.canvas()
        assert np.abs(shown - small(after)).mean() < 10, "the canvas does not show the edited scene"
        assert np.abs(shown - small(after)).mean() < np.abs(shown - small(before)).mean()
        page.pg.screenshot(path=str(ARTIFACTS / "paint_remove_tree.png"))
        page.paint(cells, attempts=1)
        assert "2 strokes" in page.status()
        page.wait_change(lambda: page.pg.locator("#undo").click())
        assert np.array_equal(page.image(), after)
        # the grid toggle draws the cell borders over the canvas
        x0, y0, scale = page.scene_box()
        clip = {"x": x0, "y": y0, "width": 512 * scale, "height": 512 * scale}
        plain = np.asarray(Image.open(io.BytesIO(page.pg.screenshot(clip=clip))).convert("L"), float)
        page.wait_change(lambda: page.pg.locator("#showgrid input").check())
        page.pg.wait_for_timeout(1500)  # the canvas redraws its background
        assert "grid on the canvas shown" in page.status()
        gridded = np.asarray(Image.open(io.BytesIO(page.pg.screenshot(clip=clip))).convert("L"), float)
        cols = np.abs(gridded - plain).mean(0)
        borders = [round(len(cols) * k / 8) for k in range(1, 8)]
        on = np.array([cols[max(0, b - 3):b + 3].max() for b in borders])
        assert on.min() > 3 * np.median(cols) + 1, (on, np.median(cols))
        page.pg.screenshot(path=str(ARTIFACTS / "paint_grid.png"))
        print(f"browser round trip for one stroke (mouse released → new scene shown): {latency:.2f} s")
        (ARTIFACTS / "latency.txt").write_text(f"stroke round trip, mouse-up to new scene shown: "
                                               f"{latency:.3f} s\n")
    finally:
        b.close()
        pw.stop()


def lowest_cell(cells):
    """Only the lowest of the given cells (a door stands on the ground, at a wall's foot)."""
    ys, xs = np.nonzero(cells)
    one = np.zeros_like(cells)
    one[ys.max(), xs[ys.argmax()]] = True
    return one


def _segmenter_sees(server, model, find, concept, action, strength, shot, **where):
    """(pixels of `concept` before, after) in and around a stroke painted in the browser on the
    first seed that has `find` (not a seed picked by the outcome)."""
    painter, seg = model
    pw, b = browser()
    try:
        page = Page(b, server)
        cells, before, after = paint_scene(page, model, find, concept, action, strength, **where)
        pad = 1 if cells.sum() == 1 else 0  # a dab: count its 8 neighbours too
        inside = region(cells, pad=pad)
        page.pg.screenshot(path=str(ARTIFACTS / shot))
        return cells, concept_pixels(seg, before, concept, inside), concept_pixels(seg, after, concept, inside)
    finally:
        b.close()
        pw.stop()


def test_removing_a_tree_in_the_browser(server, model):
    """'remove tree' at high strength over the whole tree takes away a large share of it, on the
    first tree scene (not one picked by the outcome). Per scene this varies: on the shipped
    step-27,500 model the median over 30 scenes is 24 % left (`experiments.painting`), but
    seed 0 here, a tree in front of a wall, keeps about half; with units that do not draw the
    tree nearly all of it stays."""
    _, before, after = _segmenter_sees(server, model, "tree", "tree", "remove", "high (20 units)",
                                       "paint_remove_tree_whole.png", cover=0.1)
    print(f"tree pixels in the stroke {before} → {after}")
    assert after < 0.6 * before, f"tree pixels in the stroke: {before} → {after}"


def test_drawing_a_door_in_the_browser(server, model):
    """A 'draw door' dab at medium strength at the foot of a wall adds door pixels around it."""
    cells, before, after = _segmenter_sees(server, model, "building", "door", "draw",
                                           "medium (10 units)", "paint_draw_door.png",
                                           where=lowest_cell)
    assert cells.sum() == 1
    print(f"door pixels around the dab {before} → {after}")
    assert after > before + 20, f"door pixels around the stroke: {before} → {after}"


def test_two_sessions_do_not_share_edits(server, model):
    pw, b = browser()
    try:
        one, two = Page(b, server), Page(b, server)
        seed, cells = find_scene(model, "tree")
        one.load(seed)
        two.load(seed)
        base = two.image()
        one.choose("tree", "remove")
        one.paint(component(cells))  # over the tree: a short stroke (each pointer move costs)
        assert not np.array_equal(one.image(), base)
        two.wait_change(lambda: two.pg.locator("#reset").click())
        assert np.array_equal(two.image(), base)
        assert "1 strokes" in one.status()
    finally:
        b.close()
        pw.stop()


def test_api_with_gradio_client(server):
    from gradio_client import Client
    client = Client(server, verbose=False)
    editor, grid, compare, status = client.predict(7, api_name="/new_scene")
    assert "scene 7" in status and compare == ""  # before/after is off until asked
    assert 'src="data:image/png;base64,' in grid  # the cells view comes in the page
    scene = np.asarray(Image.open(editor["background"]))
    assert scene.shape[:2] == (256, 256)
    download = np.asarray(Image.open(client.predict(api_name="/download")))  # this session's scene
    assert download.shape[:2] == (512, 512)
    small = np.asarray(Image.fromarray(download).resize((256, 256), Image.LANCZOS)).astype(int)
    assert np.abs(small - scene).mean() < 3
    again = client.predict(7, api_name="/new_scene")
    assert np.array_equal(np.asarray(Image.open(again[0]["background"])), scene)  # same seed, same scene


def test_api_errors_carry_the_message(server):
    """A handler's error reaches the client with its text (not a bare "Error")."""
    from gradio_client import Client
    client = Client(server, verbose=False)
    with pytest.raises(Exception, match=r"unit must be in 0\.\.\d+"):
        client.predict(100000, api_name="/unit_concepts")


def fetch(page, selector) -> np.ndarray:
    """The image an <img> shows: embedded in the page (a data URI) or served by URL."""
    import base64
    src = page.pg.locator(selector).first.get_attribute("src")
    data = (base64.b64decode(src.split(",", 1)[1]) if src.startswith("data:")
            else page.pg.request.get(src).body())
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_before_after_units_and_ctrl_z(server, model):
    """After a stroke applied on release: 'before / after' shows the original beside the edit
    (and their segmentation on request); the Units tab opens on the units the stroke switched
    and clicking one shows its best concepts; Ctrl+Z undoes the stroke."""
    pw, b = browser()
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        page = Page(b, server)
        cells, before, after = paint_scene(page, model, "tree", "tree", "remove", "high (20 units)")
        assert not np.array_equal(before, after)
        status = page.status()
        assert "units (local ranking)" in status and "(#1, α" in status, status
        units = [int(t.split(" (#")[0]) for t in status.split("ranking) ")[1].split("), ")]
        assert len(units) == 20
        page.wait_change(lambda: page.pg.locator("#compare_on input").check())
        assert "before/after shown" in page.status()
        page.pg.wait_for_selector("#compare img", timeout=20000)
        cmp = fetch(page, "#compare img")
        half = 256
        body = cmp[20:20 + half]
        orig = np.asarray(Image.fromarray(before).resize((half, half), Image.LANCZOS)).astype(int)
        edit = np.asarray(Image.fromarray(after).resize((half, half), Image.LANCZOS)).astype(int)
        assert np.abs(body[:, :half] - orig).mean() < 2 and np.abs(body[:, half:] - edit).mean() < 2
        page.wait_change(lambda: page.pg.locator("#labels_on input").check())
        assert "with segmentation" in page.status()
        page.pg.wait_for_timeout(500)
        cmp = fetch(page, "#compare img")
        assert cmp.shape[0] > 20 + 2 * half
        labels = cmp[20 + half:20 + 2 * half]
        tree = np.array([20, 100, 30])  # the tree's colour in assets/labels.json
        is_tree = lambda im: (np.abs(im.astype(int) - tree).sum(-1) == 0)  # noqa: E731
        inside = np.asarray(Image.fromarray(region(cells)).resize((half, half)))
        t_before, t_after = is_tree(labels[:, :half])[inside].sum(), is_tree(labels[:, half:])[inside].sum()
        assert t_after < t_before, (t_before, t_after)
        page.pg.locator("#compare").scroll_into_view_if_needed()
        page.pg.screenshot(path=str(ARTIFACTS / "before_after_labels.png"), full_page=True)
        # the Units tab opens on the stroke's units; clicking one lists its best concepts
        page.pg.get_by_role("tab", name="Units").click()
        page.pg.wait_for_function("document.querySelector('#units_head') && "
                                  "document.querySelector('#units_head').innerText.includes('last stroke')",
                                  timeout=120000)
        page.pg.wait_for_function("document.querySelectorAll('#units_gallery img').length >= 12",
                                  timeout=60000)
        captions = page.pg.locator("#units_gallery .caption-label").all_inner_texts()
        shown = [int(c.split("unit ")[1].split(" ")[0]) for c in captions]
        assert shown == units, (shown, units)
        page.pg.locator("#units_gallery img").nth(2).click()
        page.pg.wait_for_function(f"document.querySelector('#u_unit input').value == '{units[2]}'",
                                  timeout=20000)
        painter = model[0]
        best = [c for c, _ in painter.dissection["layers"][painter.layer]["unit_stats"][units[2]]["top"]]
        page.pg.wait_for_function("(c) => document.querySelector('#u_best').innerText.includes(c)",
                                  arg=best[0], timeout=20000)
        listed = page.pg.locator("#u_best").inner_text()
        assert all(c in listed for c in best), (best, listed)
        page.pg.screenshot(path=str(ARTIFACTS / "units_tab.png"), full_page=True)
        # rank the chosen concept's units by causal effect, then by IoU: the gallery follows
        d = painter.dissection
        for choice, by in (("causal effect", d.best_ranking("tree", painter.layer)), ("IoU", "iou")):
            page.pg.locator("#u_by label", has_text=choice).click()
            page.pg.wait_for_function("(b) => document.querySelector('#units_head').innerText"
                                      ".includes('by ' + b + ' ranking')", arg=by, timeout=60000)
            page.pg.wait_for_timeout(1000)
            captions = page.pg.locator("#units_gallery .caption-label").all_inner_texts()
            shown = [int(c.split("unit ")[1].split(" ")[0]) for c in captions]
            assert shown == d.top_units("tree", 12, by, painter.layer), (by, shown)
        page.pg.screenshot(path=str(ARTIFACTS / "units_tab_iou.png"), full_page=True)
        # back to painting: Ctrl+Z undoes the stroke (focus on the page, not a text box)
        page.pg.get_by_role("tab", name="Paint").click()
        page.pg.wait_for_timeout(500)
        page.pg.locator("h1").first.click()
        page.wait_change(lambda: page.pg.keyboard.press("Control+z"))
        assert "undone (0 strokes left)" in page.status()
        assert np.array_equal(page.image(), before)
    finally:
        b.close()
        pw.stop()


def test_upload_your_image_remove_a_tree_and_download(server, model, tmp_path):
    """Issue 22 in the browser: upload a picture (a held-out render, not square), see it
    reconstructed with its PSNR, remove its tree, and download the result at the picture's size:
    fewer tree pixels under the stroke, and the picture's own pixels away from the edit."""
    from ganpaint.world.scenes import HELDOUT_SEED, INDEX, render
    painter, seg = model
    wide = lambda a: np.concatenate([a, a[:, :48]], 1)  # noqa: E731  240×192, not square
    crop = lambda a: a[:, 24:216]  # noqa: E731  the centre square the app takes: what is painted
    for seed in range(HELDOUT_SEED, HELDOUT_SEED + 200):  # the first render with a tree
        img, lab = render(seed, 192)
        share = torch.nn.functional.avg_pool2d(
            torch.from_numpy(crop(wide(lab)) == INDEX["tree"]).float()[None, None], 24)[0, 0]
        if (share > 0.5).sum() >= 3:
            break
    cells = component(share.numpy() > 0.3)
    photo = wide(img)
    path = tmp_path / "my_garden.png"
    Image.fromarray(photo).save(path)
    pw, b = browser()
    try:
        page = Page(b, server)

        def upload():
            with page.pg.expect_file_chooser() as chooser:
                page.pg.locator("#upload").click()
            chooser.value.set_files(str(path))
        page.wait_change(upload, timeout=180000)
        status = page.status()
        assert "your image" in status and "centre-cropped from 240×192" in status and "dB" in status
        page.pg.wait_for_timeout(1500)  # the canvas redraws its background
        before = page.image()
        assert before.shape == photo.shape and np.array_equal(before, photo)
        page.choose("tree", "remove", "high (20 units)")
        page.paint(cells)
        page.pg.wait_for_timeout(1500)  # the canvas redraws its background
        page.pg.screenshot(path=str(ARTIFACTS / "upload_remove_tree.png"), full_page=True)
        after = page.image()
        Image.fromarray(np.concatenate([photo, after], 1)).save(ARTIFACTS / "upload_remove_tree_download.png")
    finally:
        b.close()
        pw.stop()
    assert after.shape == photo.shape
    inside = torch.nn.functional.interpolate(torch.as_tensor(cells, dtype=torch.float32)[None, None],
                                             size=(192, 192))[0, 0].bool().numpy()
    t_before = concept_pixels(seg, np.ascontiguousarray(crop(photo)), "tree", region(cells))
    t_after = concept_pixels(seg, np.ascontiguousarray(crop(after)), "tree", region(cells))
    print(f"tree pixels under the stroke {t_before} → {t_after}")
    # fewer, not few: this first tree scene is a hard case (its tree is cut by the crop's edge,
    # and the latent the inversion finds draws one there that 20 units do not remove: 81 % is
    # left); the share left over 31 held-out scenes is `ganpaint invert --eval`'s figure
    assert t_after < t_before, (t_before, t_after)
    far = ~torch.nn.functional.max_pool2d(torch.as_tensor(inside, dtype=torch.float32)[None, None],
                                          121, 1, 60)[0, 0].bool().numpy()
    assert np.array_equal(crop(after)[far], crop(photo)[far])  # the picture's own pixels
    assert np.array_equal(after[:, :24], photo[:, :24]) and np.array_equal(after[:, 216:], photo[:, 216:])
