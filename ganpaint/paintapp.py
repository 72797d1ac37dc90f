"""The painting app's logic and layout (app.py only parses flags and launches it).

State lives on the server, per session (`gr.State`): the scene's seed and the list of strokes.
Every image shown is regenerated from them by the intervention engine (the painting layer's
output is cached per latent), never from the browser's re-encoded picture, so undo is exact
and no edit can leak from one session into another.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .intervene import Painter, Stroke
from .ranking import best_ranking, concept_table, rank_units, top_units
from .scenes import to_uint8_images

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
VIEW = 512  # displayed size of the scene
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
DELETE_CACHE = (900, 1800)  # Gradio's cached copies: every 15 min, drop those over 30 min old


def guard(fn):
    """A handler whose errors reach the user: Gradio shows only "Error" for an exception that is
    not a gr.Error, with the message in the server log."""
    import functools
    import logging

    import gradio as gr

    from .checkpoint import CheckpointError
    from .labels import UnknownNameError

    @functools.wraps(fn)  # keeps the signature: Gradio injects gr.Progress by it
    def run(*args, **kwargs):
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


@dataclass
class Session:
    seed: int = 0
    strokes: list = field(default_factory=list)  # dicts: concept, action, units, boost, mask
    grid: bool = False  # feature grid drawn over the brush canvas


class PaintApp:
    """Everything the UI calls; usable (and tested) without a browser."""

    def __init__(self, generator, dissection: dict, segmenter=None, layer=None, out_dir=None):
        self.painter = Painter(generator, dissection, layer)
        self.segmenter = segmenter
        self.dissection = dissection
        self.lock = threading.Lock()  # one generator call at a time across sessions
        self.out_dir = Path(out_dir or tempfile.mkdtemp(prefix="ganpaint-"))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if out_dir is None:  # ours: gone when the server stops
            atexit.register(shutil.rmtree, self.out_dir, True)
        self.files: deque = deque()  # download PNGs written, oldest first
        self.files_lock = threading.Lock()
        table = concept_table(dissection, self.painter.layer)
        self.concepts = [r["concept"] for r in table if r["best_iou"] > 0]
        grid = dissection["layers"][self.painter.layer]
        self.units = grid["units"]
        self.grid = generator.layer_shapes([self.painter.layer])[self.painter.layer][1:]

    def first_seed(self, limit: int = 100, need=(("building", 0.10), ("tree", 0.04))) -> int:
        """The seed the app opens on: the first whose scene shows every concept of `need` over
        the given share of its pixels (a person's first view should hold something to paint and
        something to remove). Seed 0 without a segmenter, or when no seed within `limit` does."""
        if self.segmenter is None:
            return 0
        from .labels import lookup
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
        return self.painter.generator.latents([int(seed)], seed=0)

    def strokes(self, session: Session):
        out = []
        for s in session.strokes:
            st = self.painter.stroke(s["concept"], s["mask"], s["action"], s["units"], s["boost"])
            out.append(st)
        return out

    def image(self, session: Session) -> np.ndarray:
        """The session's scene with its strokes, at the model's resolution (uint8 HxWx3)."""
        with self.lock:
            x = self.painter.render(self.latent(session.seed), self.strokes(session))
        return to_uint8_images(x)[0]

    @staticmethod
    def view(img: np.ndarray, size=VIEW) -> np.ndarray:
        return np.asarray(Image.fromarray(img).resize((size, size), Image.LANCZOS))

    def grid_overlay(self, view: np.ndarray, session: Session) -> np.ndarray:
        """The scene (at VIEW px) with the feature grid drawn faintly and the cells touched by
        strokes tinted."""
        out = view.astype(np.float32)
        h, w = self.grid
        ch, cw = VIEW // h, VIEW // w
        for s in session.strokes:
            cells = torch.nn.functional.adaptive_max_pool2d(
                torch.as_tensor(s["mask"], dtype=torch.float32)[None, None], (h, w))[0, 0].numpy()
            color = np.array((255, 80, 80) if s["action"] == "remove" else (80, 200, 255), np.float32)
            for y, x in zip(*np.nonzero(cells)):
                out[y * ch:(y + 1) * ch, x * cw:(x + 1) * cw] = 0.6 * out[y * ch:(y + 1) * ch, x * cw:(x + 1) * cw] + 0.4 * color
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

    def save(self, view: np.ndarray, session: Session) -> str:
        """Write the edited scene (at VIEW px) as a PNG file (downloads are served as files)."""
        fd, path = tempfile.mkstemp(prefix=f"scene{session.seed}_", suffix=".png", dir=self.out_dir)
        os.close(fd)
        Image.fromarray(view).save(path, compress_level=1)
        with self.files_lock:  # Gradio copies the file into its cache: only recent ones are kept
            self.files.append(path)
            while len(self.files) > KEEP_FILES:
                Path(self.files.popleft()).unlink(missing_ok=True)
        return path

    # -- handlers -----------------------------------------------------------------------------
    def outputs(self, session: Session, message: str):
        img = self.image(session)
        # no composite: the editor shows the background when it has one, and the same image
        # twice would be encoded and fetched twice
        canvas = self.view(img, CANVAS)
        editor = {"background": self.grid_lines(canvas) if session.grid else canvas,
                  "layers": [], "composite": None}
        view = self.view(img)
        return editor, session, self.grid_overlay(view, session), self.save(view, session), message

    def new_scene(self, seed, session: Session | None = None):
        session = Session(seed=int(seed) if seed is not None else 0, grid=bool(session and session.grid))
        return self.outputs(session, f"scene {session.seed}: paint on it")

    def random_scene(self, session: Session | None = None):
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
              boost: float):
        session = session or Session()
        mask = self.brush_mask(editor)
        if mask is None:
            return self.outputs(session, "nothing painted: draw a stroke on the scene first")
        units = STRENGTHS.get(strength, strength)
        stroke = {"concept": concept, "action": "remove" if action.startswith("remove") else "draw",
                  "units": int(units), "boost": float(boost), "mask": mask}
        self.painter.stroke(concept, mask, stroke["action"], stroke["units"])  # validates
        session = replace(session, strokes=session.strokes + [stroke])
        return self.outputs(session, f"{stroke['action']} {concept} with {units} units "
                                     f"({len(session.strokes)} strokes)")

    def undo(self, session: Session):
        session = session or Session()
        if not session.strokes:
            return self.outputs(session, "nothing to undo")
        session = replace(session, strokes=session.strokes[:-1])
        return self.outputs(session, f"undone ({len(session.strokes)} strokes left)")

    def reset(self, session: Session):
        session = session or Session()
        return self.outputs(replace(session, strokes=[]), "back to the unedited scene")

    def show_grid(self, show: bool, session: Session):
        """Draw (or hide) the feature grid on the brush canvas; the scene and strokes stay."""
        session = replace(session or Session(), grid=bool(show))
        return self.outputs(session, f"feature grid on the canvas {'shown' if show else 'hidden'}")

    # -- units and ablation tabs -----------------------------------------------------------
    def unit_gallery(self, concept: str, top: int = 12):
        """[(strip image, caption)] for the concept's best units, plus a table of them."""
        from .report import unit_strips
        from .sources import GeneratorSource
        by = best_ranking(self.dissection, concept, self.painter.layer)
        rows = rank_units(self.dissection, concept, self.painter.layer, top, by)
        src = GeneratorSource(self.painter.generator, None, self.dissection.get("seed", 0))
        with self.lock:
            strips = unit_strips(self.dissection, src, self.painter.layer, [r["unit"] for r in rows], n=4)
        alpha = lambda r: f" · causal α {r['alpha']:.2f}" if "alpha" in r else ""  # noqa: E731
        items = [(strips[r["unit"]], f"unit {r['unit']} · IoU {r['iou']:.3f}{alpha(r)}") for r in rows]
        table = [[r["rank"], r["unit"], round(r["iou"], 4), round(r["level"], 3), r.get("alpha", "")]
                 for r in rows]
        return items, table

    def unit_concepts(self, unit: int):
        stats = self.dissection["layers"][self.painter.layer]["unit_stats"]
        unit = int(unit)
        if not 0 <= unit < len(stats):
            raise ValueError(f"unit must be in 0..{len(stats) - 1}")
        return [[c, round(v, 4)] for c, v in stats[unit]["top"]]

    def ablate_view(self, concept: str, k: int, seed: int, samples: int = 4):
        """Scenes before / after zeroing the concept's top-k units everywhere."""
        by = best_ranking(self.dissection, concept, self.painter.layer)
        units = top_units(self.dissection, concept, self.painter.layer, int(k), by)
        z = self.painter.generator.latents(range(int(seed), int(seed) + samples), seed=0)
        with self.lock:
            before = to_uint8_images(self.painter.render(z))
            after = to_uint8_images(self.painter.render(z, [Stroke(units, torch.ones(*self.grid))]))
        big = lambda imgs: np.concatenate([self.view(i, 192) for i in imgs], 1)
        return big(before), big(after)


def build_demo(app: PaintApp, curves_dir: Path | None = None):
    import gradio as gr
    concepts = app.concepts
    default = "tree" if "tree" in concepts else concepts[0]
    Image.MAX_IMAGE_PIXELS = MAX_LAYER * MAX_LAYER // 2  # PIL refuses twice this: > MAX_LAYER²
    with gr.Blocks(title="ganpaint", delete_cache=DELETE_CACHE) as demo:
        session = gr.State(Session())
        gr.Markdown("# ganpaint — paint with the units of a GAN\n"
                    f"Model `{app.dissection['model']}`, layer `{app.painter.layer}` "
                    f"({app.units} units on a {app.grid[0]}×{app.grid[1]} grid: each brush stroke "
                    "acts on whole grid cells).")
        with gr.Tab("Paint"):
            with gr.Row():
                with gr.Column(scale=3):
                    editor = gr.ImageEditor(
                        value=None, type="numpy", label="scene (paint here)", height=VIEW + 80,
                        width=VIEW, canvas_size=(CANVAS, CANVAS), fixed_canvas=True, sources=(),
                        brush=gr.Brush(default_size=12, colors=["#ff3090"], color_mode="fixed"),
                        layers=False, transforms=(), elem_id="canvas")
                with gr.Column(scale=2):
                    concept = gr.Dropdown(concepts, value=default, label="concept", elem_id="concept")
                    action = gr.Radio(["draw", "remove"], value="draw", label="action", elem_id="action")
                    strength = gr.Radio(list(STRENGTHS), value="medium (10 units)", label="strength",
                                        elem_id="strength")
                    show_grid = gr.Checkbox(False, label="show the feature grid on the canvas",
                                            elem_id="showgrid")
                    boost = gr.Slider(0.5, 3.0, value=1.0, step=0.1, label="boost (× the 99th-percentile level)")
                    apply_btn = gr.Button("apply stroke", variant="primary", elem_id="apply")
                    with gr.Row():
                        undo_btn = gr.Button("undo", elem_id="undo")
                        reset_btn = gr.Button("reset", elem_id="reset")
                    with gr.Row():
                        seed = gr.Number(value=app.first_seed(), precision=0, label="seed",
                                         elem_id="seed")
                        load_btn = gr.Button("load seed", elem_id="load")
                        rand_btn = gr.Button("new scene", elem_id="random")
                    status = gr.Textbox(label="status", interactive=False, elem_id="status")
                    grid_view = gr.Image(label="feature cells touched (grid of the painting layer)",
                                         interactive=False, height=256, elem_id="grid")
                    download = gr.File(label="download the edited scene", elem_id="download")
            outs = [editor, session, grid_view, download, status]
            load_btn.click(guard(app.new_scene), [seed, session], outs, concurrency_limit=2)
            rand_btn.click(guard(app.random_scene), [session], outs + [seed], concurrency_limit=2)
            apply_btn.click(guard(app.paint), [editor, session, concept, action, strength, boost], outs,
                            concurrency_limit=2)
            undo_btn.click(guard(app.undo), [session], outs, concurrency_limit=2)
            show_grid.change(guard(app.show_grid), [show_grid, session], outs, concurrency_limit=2)
            reset_btn.click(guard(app.reset), [session], outs, concurrency_limit=2)
            demo.load(guard(app.new_scene), [seed, session], outs)
        with gr.Tab("Units"):
            with gr.Row():
                u_concept = gr.Dropdown(concepts, value=default, label="concept")
                u_show = gr.Button("show units")
            gallery = gr.Gallery(label="top units: their top-activating scenes, region above the level outlined",
                                 columns=2, height=600)
            u_table = gr.Dataframe(headers=["rank", "unit", "IoU", "level", "causal α"],
                                   label="ranking (by causal effect when learned, else by IoU)")
            with gr.Row():
                u_unit = gr.Number(value=0, precision=0, label="unit")
                u_btn = gr.Button("best concepts of this unit")
            u_best = gr.Dataframe(headers=["concept", "IoU"], label="best concepts")
            def show_units(c, progress=gr.Progress()):
                progress(0.1, desc=f"drawing the top {c} units' best scenes")
                return app.unit_gallery(c)
            u_show.click(guard(show_units), [u_concept], [gallery, u_table])
            u_btn.click(guard(app.unit_concepts), [u_unit], [u_best])
        with gr.Tab("Ablation"):
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
