"""The painting app's logic and layout (app.py only parses flags and launches it).

State lives on the server, per session (`gr.State`): the scene's seed and the list of strokes.
Every image shown is regenerated from them by the intervention engine (the painting layer's
output is cached per latent), never from the browser's re-encoded picture, so undo is exact
and no edit can leak from one session into another.
"""
from __future__ import annotations

import atexit
import copy
import os
import shutil
import tempfile
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ganpaint.core.dissection import Dissection
from ganpaint.core.intervene import FEATHER, Painter, Stroke, apply_strokes, stroke_mask
from ganpaint.apps.serving import encode_png, png_html, touch
from ganpaint.world.scenes import to_uint8_images

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
VIEW = 512  # displayed size of the scene
GRID_VIEW = 256  # displayed size of the "feature cells touched" view
GRID_PX = 128  # ... drawn at 128 px and shown magnified (sharp pixels): 4× less to encode than 256
# The brush canvas holds the scene at 256 px (the editor zooms it to the same displayed size):
# the browser exports and uploads the canvas on every stroke, and at 512 px that alone took
# ~0.5 s of the stroke round trip in headless Chromium. The model draws 64 px, so nothing is lost.
CANVAS = 256
# Gradio 6.31's editor can leave its own progress overlay pending after its value is replaced
# (seen in headless Chromium on most strokes): the overlay then hides the new scene and swallows
# the next stroke. The status box reports progress instead, so the overlay is made transparent
# to the eye and to the pointer.
CSS = "#canvas > .wrap { opacity: 0 !important; pointer-events: none !important; }"
STRENGTHS = {"low (4 units)": 4, "medium (10 units)": 10, "high (20 units)": 20}
# Limits on what a client can send: uploads (the editor's layers come as files) and the side of a
# stroke layer (the canvas is CANVAS px; one 12000-px layer decoded to 2.65 GB). Images larger
# than MAX_LAYER² pixels are refused by PIL while reading their header, before decoding.
MAX_UPLOAD = "8mb"
MAX_LAYER = 4096
KEEP_FILES = 64  # download PNGs kept in out_dir; older ones are deleted (Gradio serves a copy)
DELETE_CACHE = (900, 1800)
CACHE_MB = 64  # memory for scenes' cached painting-layer features (~500 scenes on the default)
CONCURRENCY = 16  # renders let in at once (one concurrency group): the batcher gathers them
# Ctrl+Z / ⌘Z undoes the last applied stroke (outside text fields, whose own undo is kept): the
# browser's default would edit the focused box; the editor's own undo would only erase an
# unapplied brush layer.
HEAD = """<script>
document.addEventListener("keydown", (e) => {
  if (!(e.ctrlKey || e.metaKey) || e.shiftKey || e.altKey || e.key.toLowerCase() !== "z") return;
  const t = e.target;
  if (t && (t.tagName === "TEXTAREA" || (t.tagName === "INPUT" && t.type === "text"))) return;
  const b = document.querySelector("#undo");
  if (!b) return;
  e.preventDefault(); e.stopPropagation();
  b.click();
}, true);
</script>"""  # Gradio's cached copies: every 15 min, drop those over 30 min old


def guard(fn):
    """A handler whose errors reach the user: Gradio shows only "Error" for an exception that is
    not a gr.Error, with the message in the server log. Each call also wakes the cache janitor."""
    import functools
    import logging

    import gradio as gr

    from ganpaint.core.checkpoint import CheckpointError
    from ganpaint.core.names import UnknownNameError

    @functools.wraps(fn)  # keeps the signature: Gradio injects gr.Progress by it
    def run(*args, **kwargs):
        touch()  # the cache janitor wakes while people paint
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (ValueError, UnknownNameError, CheckpointError) as e:
            raise gr.Error(str(e)) from None
        except Exception as e:  # a bug: the user still sees what happened
            logging.getLogger("ganpaint").exception("handler %s failed", fn.__name__)
            raise gr.Error(f"{type(e).__name__}: {e}") from None
    return run


class Batcher:
    """Gathers the renders asked for at the same moment (by concurrent sessions) into one
    generator call: a request waits up to `window` seconds for others, at most `max_batch` go
    together. A batch that fails is rendered job by job, so one bad request fails alone."""

    def __init__(self, app, window: float = 0.005, max_batch: int = 16):
        self.app, self.window, self.max_batch = app, window, max_batch
        self.queue: deque = deque()
        self.cv = threading.Condition()
        self.thread: threading.Thread | None = None
        self.sizes: list = []  # batch sizes rendered (the last 1000)

    def render(self, seed: int, strokes) -> np.ndarray:
        """The image for (seed, strokes), rendered in one generator call with the other
        requests that arrive within `window` seconds; blocks until it is ready."""
        f: Future = Future()
        with self.cv:
            self.queue.append((int(seed), list(strokes), f))
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self.run, name="ganpaint-batcher", daemon=True)
                self.thread.start()
            self.cv.notify()
        return f.result()

    def run(self):
        """The batching thread: gather queued requests, render them together, hand back each
        result (one by one when the batch fails, so one bad request fails alone)."""
        import time
        while True:
            with self.cv:
                while not self.queue:
                    self.cv.wait()
                deadline = time.monotonic() + self.window
                while len(self.queue) < self.max_batch and time.monotonic() < deadline:
                    self.cv.wait(max(0.0, deadline - time.monotonic()))
                jobs = [self.queue.popleft() for _ in range(min(len(self.queue), self.max_batch))]
            self.sizes = (self.sizes + [len(jobs)])[-1000:]
            try:
                imgs = self.app.render_batch([(s, st) for s, st, _ in jobs])
                for (_, _, f), img in zip(jobs, imgs):
                    f.set_result(img)
            except Exception:
                for s, st, f in jobs:
                    try:
                        f.set_result(self.app.render_batch([(s, st)])[0])
                    except Exception as e:
                        f.set_exception(e)


@dataclass
class Session:
    """One person's painting state (kept per browser tab by Gradio): the scene's seed, the
    strokes applied in order, and the view's toggles."""
    seed: int = 0
    strokes: list = field(default_factory=list)  # dicts: concept, action, units, boost, feather, mask, stroke
    grid: bool = False  # feature grid drawn over the brush canvas
    compare: bool = False  # before/after view shown
    labels: bool = False  # ... with the segmentation of both
    photo: object = None  # an uploaded image's `Inversion`: painted instead of scene `seed`


class PaintApp:
    """Everything the UI calls; usable (and tested) without a browser."""

    def __init__(self, generator, dissection: Dissection, segmenter=None, layer=None, out_dir=None,
                 encoder=None):
        self.painter = Painter(generator, dissection, layer)
        self.segmenter = segmenter
        self.encoder = encoder  # starts inversions of uploads (optional: random starts without)
        self.dissection = self.painter.dissection
        self.lock = threading.Lock()  # one generator call at a time across sessions
        self.batcher = Batcher(self)  # concurrent renders are gathered into one generator call
        self.strips: dict = {}  # unit → its top-activating scenes, outlined (the Units tab)
        self.out_dir = Path(out_dir or tempfile.mkdtemp(prefix="ganpaint-"))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if out_dir is None:  # ours: gone when the server stops
            atexit.register(shutil.rmtree, self.out_dir, True)
        self.files: deque = deque()  # download PNGs written, oldest first
        self.files_lock = threading.Lock()
        table = self.dissection.concept_table(self.painter.layer)
        self.concepts = [r["concept"] for r in table if r["best_iou"] > 0]
        self.units = self.dissection.units(self.painter.layer)
        shape = generator.layer_shapes([self.painter.layer])[self.painter.layer]
        self.grid = shape[1:]
        self.painter.cache_size = max(16, CACHE_MB * 2**20 // (4 * int(np.prod(shape))))

    def first_seed(self, limit: int = 100, need=(("building", 0.10), ("tree", 0.04))) -> int:
        """The seed the app opens on: the first whose scene shows every concept of `need` over
        the given share of its pixels (a person's first view should hold something to paint and
        something to remove). Seed 0 without a segmenter, or when no seed within `limit` does."""
        if self.segmenter is None:
            return 0
        from ganpaint.world.labels import lookup
        try:
            want = [(lookup(c, self.segmenter.concepts), share) for c, share in need]
        except KeyError:  # a segmenter without these concepts
            return 0
        for start in range(0, limit, 16):
            seeds = list(range(start, min(limit, start + 16)))
            with self.lock:
                z = self.painter.generator.latents(seeds, seed=0)
                lab = self.segmenter.segment(self.painter.render(z))
            for seed, l in zip(seeds, lab):
                if all((l == c).float().mean() >= share for c, share in want):
                    return seed
        return 0

    # -- rendering --------------------------------------------------------------------------
    def latent(self, seed: int) -> torch.Tensor:
        """The latent of scene `seed` (the same seed always gives the same scene)."""
        return self.painter.generator.latents([int(seed)], seed=0)

    def strokes(self, session: Session):
        """The session's strokes as the painter's `Stroke`s (units chosen when painted)."""
        return [s["stroke"] for s in session.strokes]

    def scene_features(self, session: Session) -> torch.Tensor:
        """The painting layer's features that the next stroke's units are chosen on: the
        scene's with the session's strokes applied (for an upload, its latent's own, which a
        "draw" stroke's cells restart from: `Inversion.stroked_features`)."""
        with self.lock:
            if session.photo is not None:
                f = session.photo.latent_features(self.painter.generator)
            else:
                f = self.painter.features(self.latent(session.seed))
        return apply_strokes(f, self.strokes(session))

    def image(self, session: Session) -> np.ndarray:
        """The session's scene with its strokes, at the model's resolution (uint8 HxWx3):
        rendered by the batcher, together with other sessions' requests of the same moment.
        An uploaded image is edited through its inversion, the edit composited into it."""
        if session.photo is not None:
            with self.lock:
                out = session.photo.edit(self.painter.generator, self.strokes(session))
            return to_uint8_images(out)[0]
        return self.batcher.render(session.seed, self.strokes(session))

    def render_batch(self, jobs) -> list[np.ndarray]:
        """[(seed, [Stroke])] → their images, in one generator pass after the painting layer
        (each latent's painting-layer features come from the painter's cache); a generator that
        cannot be split there renders each job alone."""
        p = self.painter
        with self.lock:
            if p.generator.can_split(p.layer):
                # features one latent at a time: batched, they would differ in float rounding
                # from a scene rendered alone (a reply must not depend on who else paints)
                feats = [apply_strokes(p.features(self.latent(seed)), strokes) for seed, strokes in jobs]
                with torch.no_grad():
                    x = p.generator.forward_from(p.layer, torch.cat(feats))
            else:
                x = torch.cat([p.render(self.latent(seed), strokes) for seed, strokes in jobs])
        return list(to_uint8_images(x))

    def segmentation(self, img: np.ndarray) -> np.ndarray:
        """The segmenter's label map of a (H, W, 3) uint8 scene, coloured as assets/labels.json."""
        from ganpaint.world.labels import colorize
        if getattr(self, "seg_colors", None) is None:  # by name: any segmenter's label order
            from ganpaint.world.labels import COLORS, lookup
            def color(name):
                try:
                    return COLORS[lookup(name)]
                except KeyError:
                    return np.array((128, 128, 128), np.uint8)
            self.seg_colors = np.stack([color(c) for c in self.segmenter.concepts]).astype(np.uint8)
        x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
        with self.lock:
            lab = self.segmenter.segment(x)[0].cpu().numpy()
        return colorize(lab, self.seg_colors), lab

    def compare_view(self, session: Session, img: np.ndarray | None = None) -> np.ndarray:
        """The original scene beside the edited one (VIEW/2 px each), with, when the session
        asks and there is a segmenter, the segmentation of both below and a legend."""
        from PIL import ImageDraw
        img = self.image(session) if img is None else img
        orig = self.image(replace(session, strokes=[])) if session.strokes else img
        half = VIEW // 2
        rows = [np.concatenate([self.view(orig, half), self.view(img, half)], 1)]
        present = []
        if session.labels and self.segmenter is not None:
            (ca, la), (cb, lb) = self.segmentation(orig), self.segmentation(img)
            near = lambda c: np.asarray(Image.fromarray(c).resize((half, half), Image.NEAREST))  # noqa: E731
            rows.append(np.concatenate([near(ca), near(cb)], 1))
            present = sorted(set(np.unique(la)) | set(np.unique(lb)))
        out = np.concatenate(rows, 0)
        band = Image.new("RGB", (VIEW, 20 + 18 * ((len(present) + 3) // 4)), (255, 255, 255))
        d = ImageDraw.Draw(band)
        d.text((4, 4), "original", fill=(0, 0, 0))
        d.text((half + 4, 4), f"edited ({len(session.strokes)} strokes)", fill=(0, 0, 0))
        if present:
            for k, c in enumerate(present):
                x, y = 4 + (k % 4) * (VIEW // 4), 20 + 18 * (k // 4)
                d.rectangle((x, y + 2, x + 12, y + 14), fill=tuple(int(v) for v in self.seg_colors[c]),
                            outline=(0, 0, 0))
                d.text((x + 16, y + 3), self.segmenter.concepts[c], fill=(0, 0, 0))
        return np.concatenate([np.asarray(band)[:20], out, np.asarray(band)[20:]], 0)

    @staticmethod
    def view(img: np.ndarray, size=VIEW) -> np.ndarray:
        """The image resized for display (Lanczos)."""
        return np.asarray(Image.fromarray(img).resize((size, size), Image.LANCZOS))

    def grid_overlay(self, view: np.ndarray, session: Session) -> np.ndarray:
        """The scene (at its view's size) with the feature grid drawn faintly and the cells
        touched by strokes tinted (the soft edge's cells fainter)."""
        out = view.astype(np.float32)
        h, w = self.grid
        ch, cw = out.shape[0] // h, out.shape[1] // w
        for s in session.strokes:
            cells = stroke_mask(s["stroke"], (h, w)).numpy()
            color = np.array((255, 80, 80) if s["action"] == "remove" else (80, 200, 255), np.float32)
            for y, x in zip(*np.nonzero(cells)):
                a = 0.4 * float(cells[y, x])
                out[y * ch:(y + 1) * ch, x * cw:(x + 1) * cw] = (1 - a) * out[y * ch:(y + 1) * ch, x * cw:(x + 1) * cw] + a * color
        return self.grid_lines(out)

    def grid_lines(self, img: np.ndarray) -> np.ndarray:
        """`img` with the painting layer's cell borders drawn faintly (one cell per unit position:
        why strokes act on blocks)."""
        out = img.astype(np.float32)
        h, w = self.grid
        ch, cw = out.shape[0] / h, out.shape[1] / w
        rows, cols = (np.arange(1, h) * ch).astype(int), (np.arange(1, w) * cw).astype(int)
        out[rows, :] = 0.5 * out[rows, :] + 127
        out[:, cols] = 0.5 * out[:, cols] + 127
        return out.clip(0, 255).astype(np.uint8)

    def download(self, session: Session) -> str:
        """The edited scene as a PNG file, written when the person asks for it (the download
        button), not on every reply: at VIEW px, or an uploaded picture at its own resolution
        with the edit composited in. Only the newest KEEP_FILES files are kept."""
        session = session or Session()
        name = f"scene{session.seed}_"
        if session.photo is not None and session.photo.image is not None:
            with self.lock:
                view = session.photo.edit_full(self.painter.generator, self.strokes(session))
            name = "your_image_"
        else:
            view = self.view(self.image(session))
        fd, path = tempfile.mkstemp(prefix=name, suffix=".png", dir=self.out_dir)
        with os.fdopen(fd, "wb") as f:
            f.write(encode_png(view))
        with self.files_lock:  # Gradio copies the file into its cache: only recent ones are kept
            self.files.append(path)
            while len(self.files) > KEEP_FILES:
                Path(self.files.popleft()).unlink(missing_ok=True)
        return path

    # -- handlers -----------------------------------------------------------------------------
    def outputs(self, session: Session, message: str):
        """What every handler returns: the editor (scene as background), the session,
        the cells view, the before/after view (None when off) and the status message."""
        img = self.image(session)
        # no composite: the editor shows the background when it has one, and the same image
        # twice would be encoded and fetched twice
        canvas = self.view(img, CANVAS)
        editor = {"background": self.grid_lines(canvas) if session.grid else canvas,
                  "layers": [], "composite": None}
        compare = self.compare_view(session, img) if session.compare else None
        cells = self.grid_overlay(self.view(img, GRID_PX), session)
        return editor, session, cells, compare, message

    def new_scene(self, seed, session: Session | None = None):
        """A fresh session on scene `seed`, keeping the view's toggles."""
        old = session or Session()
        session = Session(seed=int(seed) if seed is not None else 0, grid=old.grid,
                          compare=old.compare, labels=old.labels)
        return self.outputs(session, f"scene {session.seed}: paint on it")

    def upload(self, path, session: Session | None = None, progress=None):
        """Paint on the person's own image: invert it into the generator (encoder or random
        starts, then optimisation and adaptation of the layers after the painting layer), then
        paint as on a generated scene; edits are composited into the image, the download is at
        its resolution. Any size: centre-cropped and resized, with a message saying so."""
        from ganpaint.apps.invert import invert, load_image, output_size
        if not path:
            raise ValueError("no file received: choose an image file to upload")
        old = session or Session()
        prepared = load_image(path, output_size(self.painter.generator), MAX_LAYER * MAX_LAYER)
        # the ~20 s inversion runs on copies taken between renders: it hooks and back-propagates
        # through them, while the other sessions keep painting with the shared models
        with self.lock:
            gen, seg = copy.deepcopy(self.painter.generator), copy.deepcopy(self.segmenter)
        inv = invert(gen, prepared, encoder=self.encoder, perceptual=seg,
                     layer=self.painter.layer, progress=progress)
        session = Session(seed=old.seed, grid=old.grid, compare=old.compare, labels=old.labels,
                          photo=inv)
        return self.outputs(session, f"your image: {prepared.message}; reconstructed at "
                                     f"{inv.psnr:.1f} dB PSNR in {inv.stats['seconds']:.0f} s. "
                                     f"Paint on it; "
                                     f"edits are blended into your image (download: full size). "
                                     f"'load seed' or 'new scene' goes back to generated scenes")

    def random_scene(self, session: Session | None = None):
        """A new scene with a random seed (also returned, for the seed box)."""
        seed = int(np.random.default_rng().integers(0, 100000))
        return (*self.new_scene(seed, session), seed)

    @staticmethod
    def brush_mask(editor) -> np.ndarray | None:
        """The painted pixels of the editor's layers as a bool (H, W) mask, or None if empty."""
        if not editor:
            return None
        layers = [l for l in (editor.get("layers") or []) if l is not None]
        if not layers:
            return None
        for l in layers:
            h, w = np.shape(l)[:2]
            if max(h, w) > MAX_LAYER:
                raise ValueError(f"stroke layer of {w}×{h} px refused: at most "
                                 f"{MAX_LAYER}×{MAX_LAYER} (the canvas is {CANVAS}×{CANVAS})")
        m = np.zeros(np.asarray(layers[0]).shape[:2], bool)
        for l in layers:
            a = np.asarray(l)
            m |= (a[..., 3] > 0) if a.ndim == 3 and a.shape[2] == 4 else (a.reshape(*a.shape[:2], -1).max(-1) > 0)
        return m if m.any() else None

    def paint(self, editor, session: Session, concept: str, action: str, strength: str,
              boost: float, feather: float = FEATHER):
        """Apply the stroke painted in the editor (on mouse release): the concept's units
        are switched in the painted cells, and at `feather` in the cells around them (the soft
        edge: a generator draws an object from a neighbourhood of cells); the status lists
        the units."""
        session = session or Session()
        mask = self.brush_mask(editor)
        if mask is None:
            return self.outputs(session, "nothing painted: draw a stroke on the scene first")
        units = STRENGTHS.get(strength, strength)
        stroke = {"concept": concept, "action": "remove" if action.startswith("remove") else "draw",
                  "units": int(units), "boost": float(boost), "feather": float(feather), "mask": mask}
        stroke["stroke"] = self.painter.stroke(concept, mask, stroke["action"], stroke["units"],
                                               stroke["boost"], features=self.scene_features(session),
                                               feather=stroke["feather"])
        stroke["rows"] = self.switched(concept, stroke["stroke"].units, stroke["action"])
        session = replace(session, strokes=session.strokes + [stroke])
        return self.outputs(session, f"{stroke['action']} {concept} with {units} units "
                                     f"({len(session.strokes)} strokes): {self.unit_list(stroke)}")

    def switched(self, concept: str, units, action: str = "remove") -> list[dict]:
        """[{rank, unit, iou, level, alpha?}]: the given units of a stroke of `concept`, in the
        order chosen, with their places in the painter's ranking for the action (see
        Painter.ranking)."""
        rows = {r["unit"]: r for r in self.dissection.rank(
            concept, self.painter.ranking(concept, action), self.painter.layer, None)}
        return [rows[u] for u in units]

    def unit_list(self, stroke: dict) -> str:
        """'units 12 (#1, α 0.31), ...' for the status line."""
        by = self.painter.ranking(stroke["concept"], stroke["action"])
        what = lambda r: (f"α {r['alpha']:.2f}" if "alpha" in r else f"IoU {r['iou']:.3f}")  # noqa: E731
        return (f"units ({by} ranking) " +
                ", ".join(f"{r['unit']} (#{r['rank']}, {what(r)})" for r in stroke["rows"]))

    def stroke_on_release(self, editor, session: Session, concept: str, action: str,
                          strength: str, boost: float, feather: float = FEATHER):
        """The editor's input event (it fires when a brush stroke ends, and also when the server
        replaces the canvas): paint if there is a stroke; otherwise change nothing, so replacing
        the canvas does not trigger another reply (no feedback loop)."""
        if self.brush_mask(editor) is None:
            import gradio as gr
            return tuple(gr.skip() for _ in range(5))  # one per output of `outputs`
        return self.paint(editor, session, concept, action, strength, boost, feather)

    def clear(self, session: Session):
        """The canvas's trash icon: put the scene (with its strokes) back on the canvas."""
        session = session or Session()
        return self.outputs(session, f"canvas restored (scene {session.seed}, "
                                     f"{len(session.strokes)} strokes; undo removes strokes)")

    def set_compare(self, compare: bool, labels: bool, session: Session):
        """Show (or hide) the original scene beside the edited one, and their segmentation."""
        labels = bool(labels) and self.segmenter is not None
        session = replace(session or Session(), compare=bool(compare), labels=labels)
        what = "before/after " + ("with segmentation " if labels else "") + "shown" if compare else "before/after hidden"
        return self.outputs(session, what)

    def undo(self, session: Session):
        """Drop the last stroke."""
        session = session or Session()
        if not session.strokes:
            return self.outputs(session, "nothing to undo")
        session = replace(session, strokes=session.strokes[:-1])
        return self.outputs(session, f"undone ({len(session.strokes)} strokes left)")

    def reset(self, session: Session):
        """Drop every stroke: back to the generated scene."""
        session = session or Session()
        return self.outputs(replace(session, strokes=[]), "back to the unedited scene")

    def show_grid(self, show: bool, session: Session):
        """Draw (or hide) the feature grid on the brush canvas; the scene and strokes stay."""
        session = replace(session or Session(), grid=bool(show))
        return self.outputs(session, f"feature grid on the canvas {'shown' if show else 'hidden'}")

    # -- units and ablation tabs -----------------------------------------------------------
    def unit_strips(self, units) -> dict:
        """{unit: strip of its 4 top-activating scenes, the region above its level outlined},
        drawn once per unit and kept."""
        from ganpaint.apps.report import unit_strips
        from ganpaint.core.sources import GeneratorSource
        todo = [u for u in units if u not in self.strips]
        if todo:
            src = GeneratorSource(self.painter.generator, None, self.dissection.seed)
            with self.lock:
                self.strips.update(unit_strips(self.dissection, src, self.painter.layer, todo, n=4))
        return {u: self.strips[u] for u in units}

    def gallery(self, rows, concept: str):
        """[(strip, caption)], table rows and unit ids for ranked rows of `concept`'s units."""
        strips = self.unit_strips([r["unit"] for r in rows])
        stats = self.dissection.unit_stats(self.painter.layer)
        def caption(r):
            label, iou = stats[r["unit"]]["top"][0] if stats[r["unit"]].get("top") else ("?", 0.0)
            alpha = f" · α {r['alpha']:.2f}" if "alpha" in r else ""
            return (f"#{r['rank']} unit {r['unit']} · {concept} IoU {r['iou']:.3f}{alpha} · "
                    f"label {label} ({iou:.2f})")
        def tile(strip):  # the 4 scenes of a strip as a 2×2 square (the gallery's cells are square)
            t = strip.shape[0]
            return np.concatenate([strip[:, :2 * t], strip[:, 2 * t:4 * t]], 0)
        items = [(tile(strips[r["unit"]]), caption(r)) for r in rows]
        table = [[r["rank"], r["unit"], round(r["iou"], 4), round(r["level"], 3), r.get("alpha", "")]
                 for r in rows]
        return items, table, [r["unit"] for r in rows]

    def units_tab(self, session: Session, concept: str, top: int = 12, by: str = "iou"):
        """What the Units tab shows when opened: the units the session's last stroke switched
        (its concept chosen), else the chosen concept's top units. Returns (concept, heading,
        gallery items, table, unit ids)."""
        last = (session.strokes[-1] if session and session.strokes else None)
        if last is not None and last.get("rows"):
            concept = last["concept"]
            items, table, units = self.gallery(last["rows"], concept)
            ranking = self.painter.ranking(concept, last["action"])
            head = (f"**Your last stroke** ({last['action']} {concept}) switched these "
                    f"{len(units)} units, in the {ranking} ranking. ")
            if ranking != "iou":  # learned by effect: a person expects outlines of the concept
                head += ("That ranking is learned from what switching units does, so their "
                         f"outlines need not cover {concept}; rank by IoU for the units that "
                         "detect it. ")
            head += "Click a unit for its best concepts; choose a concept for its top units."
            return concept, head, items, table, units
        return (concept, *self.concept_units(concept, top, by))

    def concept_units(self, concept: str, top: int = 12, by: str = "iou"):
        """(heading, gallery items, table, unit ids) of `concept`'s top units, ranked `by`
        "iou" (what the units detect: their outlines cover the concept) or "causal" (what they
        draw: the learned ranking strokes use, IoU when none was learned). The two differ: on
        the scene GAN the top causal tree units outline clouds, windows and walls."""
        if by not in ("iou", "causal"):
            raise ValueError(f"rank units by 'iou' or 'causal', not {by!r}")
        if by == "causal":
            by = self.dissection.best_ranking(concept, self.painter.layer)
        rows = self.dissection.rank(concept, by, self.painter.layer, top)
        items, table, units = self.gallery(rows, concept)
        head = (f"The top {len(units)} **{concept}** units by {by} ranking: each with its top-"
                "activating scenes, the region above the unit's level outlined. Click a unit for "
                "its best concepts.")
        return head, items, table, units

    def unit_concepts(self, unit: int):
        """[[concept, IoU], ...]: the unit's best concepts, for the Units tab."""
        stats = self.dissection.unit_stats(self.painter.layer)
        unit = int(unit)
        if not 0 <= unit < len(stats):
            raise ValueError(f"unit must be in 0..{len(stats) - 1}")
        return [[c, round(v, 4)] for c, v in stats[unit]["top"]]

    def ablate_view(self, concept: str, k: int, seed: int, samples: int = 4):
        """Scenes before / after zeroing the concept's top-k units everywhere."""
        by = self.dissection.best_ranking(concept, self.painter.layer)
        units = self.dissection.top_units(concept, int(k), by, self.painter.layer)
        z = self.painter.generator.latents(range(int(seed), int(seed) + samples), seed=0)
        with self.lock:
            before = to_uint8_images(self.painter.render(z))
            after = to_uint8_images(self.painter.render(z, [Stroke(units, torch.ones(*self.grid))]))
        big = lambda imgs: np.concatenate([self.view(i, 192) for i in imgs], 1)
        return big(before), big(after)


def limit_decoding():
    """Make PIL refuse, from the header and before decoding, any image over MAX_LAYER² pixels
    (what Gradio decodes from a client). Process-wide, so the server calls it, not the library:
    other code in the same process (an inversion upload) keeps its own limits and messages."""
    Image.MAX_IMAGE_PIXELS = MAX_LAYER * MAX_LAYER // 2  # PIL refuses twice this: > MAX_LAYER²


def embed_views(fn):
    """A handler whose cells and before/after views (outputs 2 and 3) are sent as HTML."""
    import functools

    @functools.wraps(fn)
    def run(*args, **kwargs):
        out = fn(*args, **kwargs)
        if not isinstance(out[2], np.ndarray) and out[2] is not None:  # gr.skip(): nothing new
            return out
        return (*out[:2], png_html(out[2], "feature cells touched", GRID_VIEW, pixelated=True),
                png_html(out[3], "before / after", VIEW), *out[4:])
    return run


def build_demo(app: PaintApp, curves_dir: Path | None = None):
    """The Gradio Blocks of the app (Paint, Units, Ablation tabs) around a `PaintApp`."""
    import gradio as gr

    from ganpaint.apps.components import PhotoUpload, StrokeCanvas
    concepts = app.concepts
    default = "tree" if "tree" in concepts else concepts[0]
    with gr.Blocks(title="ganpaint", delete_cache=DELETE_CACHE) as demo:
        session = gr.State(Session())
        gr.Markdown("# ganpaint — paint with the units of a GAN\n"
                    f"Model `{app.dissection.model}`, layer `{app.painter.layer}` "
                    f"({app.units} units on a {app.grid[0]}×{app.grid[1]} grid: each brush stroke "
                    "acts on whole grid cells). Brush over the scene: the stroke applies when you "
                    "release the mouse. **Ctrl+Z** (or ⌘Z) or the undo button undoes the last stroke.")
        with gr.Tabs():
            with gr.Tab("Paint", id="paint"):
                with gr.Row():
                    with gr.Column(scale=3):
                        editor = StrokeCanvas(
                            value=None, type="numpy", format="png", label="scene (paint here: a stroke applies on release)",
                            height=VIEW + 80, width=VIEW, canvas_size=(CANVAS, CANVAS), fixed_canvas=True,
                            sources=(), brush=gr.Brush(default_size=12, colors=["#ff3090"], color_mode="fixed"),
                            layers=False, transforms=(), elem_id="canvas")
                        compare_img = gr.HTML(label="before / after", show_label=True, container=True,
                                              visible=False, elem_id="compare")
                    with gr.Column(scale=2):
                        concept = gr.Dropdown(concepts, value=default, label="concept", elem_id="concept")
                        action = gr.Radio(["draw", "remove"], value="draw", label="action", elem_id="action")
                        strength = gr.Radio(list(STRENGTHS), value="medium (10 units)", label="strength",
                                            elem_id="strength")
                        boost = gr.Slider(0.5, 3.0, value=1.0, step=0.1,
                                          label="boost (× the 99th-percentile level)")
                        feather = gr.Slider(0.0, 1.0, value=FEATHER, step=0.1, elem_id="edge",
                                            label="soft edge (strength in the cells around a stroke)")
                        with gr.Row():
                            undo_btn = gr.Button("undo (Ctrl+Z)", elem_id="undo")
                            reset_btn = gr.Button("reset", elem_id="reset")
                            download_btn = gr.Button("download", elem_id="download_btn")
                            # filled on request, then clicked by the page: the browser saves it
                            download = gr.DownloadButton(visible="hidden", elem_id="download")
                            apply_btn = gr.Button("apply stroke again", size="sm", elem_id="apply")
                        with gr.Row():
                            compare = gr.Checkbox(False, label="before / after", elem_id="compare_on")
                            seg_note = ("" if app.segmenter is not None else
                                        " (no segmenter loaded: unavailable)")
                            labels = gr.Checkbox(False, label="with segmentation" + seg_note,
                                                 interactive=app.segmenter is not None,
                                                 elem_id="labels_on")
                            show_grid = gr.Checkbox(False, label="feature grid on the canvas",
                                                    elem_id="showgrid")
                        with gr.Row():
                            seed = gr.Number(value=app.first_seed(), precision=0, label="seed",
                                             elem_id="seed")
                            load_btn = gr.Button("load seed", elem_id="load")
                            rand_btn = gr.Button("new scene", elem_id="random")
                        upload_btn = PhotoUpload(
                            "upload your image (any size: centre-cropped; 10–25 s to invert)",
                            file_types=["image"], file_count="single", type="filepath",
                            elem_id="upload")
                        status = gr.Textbox(label="status", interactive=False, elem_id="status", lines=3)
                        grid_view = gr.HTML(label="feature cells touched (grid of the painting layer)",
                                            show_label=True, container=True, elem_id="grid")
            outs = [editor, session, grid_view, compare_img, status]
            paint_in = [editor, session, concept, action, strength, boost, feather]
            kw = dict(concurrency_limit=CONCURRENCY, concurrency_id="render")
            paint_handler = lambda f: guard(embed_views(f))  # noqa: E731
            load_btn.click(paint_handler(app.new_scene), [seed, session], outs, **kw)
            rand_btn.click(paint_handler(app.random_scene), [session], outs + [seed], **kw)

            def upload(path, sess, progress=gr.Progress()):
                progress(0.0, desc="inverting your image into the generator")
                return app.upload(path, sess, lambda f, desc: progress(f, desc=desc))
            upload_btn.upload(paint_handler(upload), [upload_btn, session], outs, **kw)
            # a stroke applies on release: the editor's input event fires when a stroke ends
            editor.input(paint_handler(app.stroke_on_release), paint_in, outs, show_progress="hidden",
                         trigger_mode="always_last", **kw)
            apply_btn.click(paint_handler(app.paint), paint_in, outs, **kw)
            undo_btn.click(paint_handler(app.undo), [session], outs, **kw)
            reset_btn.click(paint_handler(app.reset), [session], outs, **kw)
            editor.clear(paint_handler(app.clear), [session], outs, **kw)
            show_grid.change(paint_handler(app.show_grid), [show_grid, session], outs, **kw)
            def show_compare(on):
                return gr.update(visible=bool(on))
            compare.change(guard(show_compare), [compare], [compare_img], queue=False)
            compare.change(paint_handler(app.set_compare), [compare, labels, session], outs, **kw)
            labels.change(paint_handler(app.set_compare), [compare, labels, session], outs, **kw)
            demo.load(paint_handler(app.new_scene), [seed, session], outs)
            download_btn.click(guard(app.download), [session], [download], **kw).then(
                None, None, None, js="() => document.querySelector('#download').click()")
            with gr.Tab("Units", id="units") as units_tab:
                u_head = gr.Markdown(elem_id="units_head")
                with gr.Row():
                    u_concept = gr.Dropdown(concepts, value=default, label="concept", elem_id="u_concept")
                    u_by = gr.Radio([("IoU: what the units detect", "iou"),
                                     ("causal effect: what they draw", "causal")], value="iou",
                                    label="rank units by", elem_id="u_by")
                u_units = gr.State([])
                gallery = gr.Gallery(label="units: top-activating scenes, region above the unit's level "
                                     "outlined (click one)", columns=4, height="auto", object_fit="contain",
                                     elem_id="units_gallery", allow_preview=False)
                with gr.Row():
                    u_table = gr.Dataframe(headers=["rank", "unit", "IoU", "level", "causal α"],
                                           label="ranking")
                    with gr.Column():
                        with gr.Row():
                            u_unit = gr.Number(value=0, precision=0, label="unit", elem_id="u_unit")
                            u_btn = gr.Button("best concepts of this unit")
                        u_best = gr.Dataframe(headers=["concept", "IoU"], label="best concepts",
                                              elem_id="u_best")

            def open_units(sess, c, by, progress=gr.Progress()):
                progress(0.1, desc="drawing the units' top-activating scenes")
                return app.units_tab(sess, c, by=by)

            def concept_units(c, by, progress=gr.Progress()):
                progress(0.1, desc=f"drawing the top {c} units' best scenes")
                return app.concept_units(c, by=by)

            def pick_unit(units, evt: gr.SelectData):
                unit = int(units[evt.index])
                return unit, app.unit_concepts(unit)
            pick_unit.__annotations__["evt"] = gr.SelectData  # resolved here, not as a string
            unit_outs = [u_head, gallery, u_table, u_units]
            units_tab.select(guard(open_units), [session, u_concept, u_by], [u_concept] + unit_outs)
            u_concept.input(guard(concept_units), [u_concept, u_by], unit_outs)
            u_by.input(guard(concept_units), [u_concept, u_by], unit_outs)
            gallery.select(guard(pick_unit), [u_units], [u_unit, u_best])
            u_btn.click(guard(app.unit_concepts), [u_unit], [u_best])
            with gr.Tab("Ablation", id="ablation"):
                with gr.Row():
                    a_concept = gr.Dropdown(concepts, value=default, label="concept")
                    a_k = gr.Slider(0, 40, value=20, step=1, label="k units ablated")
                    a_seed = gr.Number(value=0, precision=0, label="first seed")
                    a_btn = gr.Button("ablate")
                a_before = gr.Image(label="before", interactive=False)
                a_after = gr.Image(label="after ablating the top-k units everywhere", interactive=False)
                curve = gr.Image(label="ablation curve (from `ganpaint ablate`)", interactive=False)

                def ablate(c, k, s, progress=gr.Progress()):
                    progress(0.1, desc=f"regenerating without the top {int(k)} {c} units")
                    before, after = app.ablate_view(c, k, s)
                    path = curves_dir / f"ablate_{c}.png" if curves_dir else None
                    return before, after, (str(path) if path and path.exists() else None)
                a_btn.click(guard(ablate), [a_concept, a_k, a_seed], [a_before, a_after, curve])
    return demo
