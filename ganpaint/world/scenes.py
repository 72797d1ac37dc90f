"""Procedural outdoor town scenes with exact per-pixel labels.

The embedded data source: the shipped segmenter and scene GAN are trained on it, and it
doubles as a labelled probe set. A scene is first laid out in unit coordinates (a list of
shapes, resolution-free), then rasterised at 64, 128 or 256 px, so a seed gives the same scene
at every size.

Rules: sky above the horizon, grass (and a road) below; clouds only in the sky; trees and
buildings stand on the ground, nearer ones lower, larger and drawn later; windows on walls;
doors touch the bottom edge of their wall; roofs and domes sit on top of walls.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache

import cv2
import numpy as np

from ganpaint.world.labels import INDEX

SKY, CLOUD, GRASS, ROAD, TREE, BUILDING, ROOF, DOME, WINDOW, DOOR = (
    INDEX[n] for n in ("sky", "cloud", "grass", "road", "tree", "building", "roof", "dome",
                       "window", "door"))

# Surface textures (index into the material map).
FLAT, GRASS_TEX, LEAVES, BRICK, PLASTER, ASPHALT, SOFT = range(7)
SIZES = (64, 128, 256)
SHIFT = 4  # sub-pixel bits for cv2 drawing, so shapes do not snap to the pixel grid
HELDOUT_SEED = 1_000_000_000  # seeds at or above this are never used for training

SKY_TYPES = {  # top colour, horizon colour, cloud colour
    "clear": ((40, 100, 200), (170, 205, 240), (250, 250, 252)),
    "overcast": ((120, 128, 140), (185, 190, 196), (215, 217, 222)),
    "dusk": ((60, 50, 120), (245, 150, 90), (240, 190, 190)),
}
WALL_COLORS = [(225, 210, 180), (240, 236, 225), (170, 80, 60), (150, 150, 150),
               (220, 190, 100), (140, 160, 185), (200, 140, 110)]
ROOF_COLORS = [(160, 50, 40), (70, 70, 80), (110, 70, 45), (60, 110, 90), (130, 90, 90)]
DOME_COLORS = [(215, 175, 50), (70, 150, 140), (170, 175, 185), (120, 80, 60)]
DOOR_COLORS = [(90, 50, 30), (120, 25, 30), (30, 70, 40), (30, 30, 40), (60, 80, 140)]
WINDOW_COLORS = [(35, 45, 70), (150, 190, 220), (20, 20, 25), (90, 120, 160)]


@dataclass
class Shape:
    """One filled shape of a scene, in unit coordinates (x right, y down, [0, 1])."""
    kind: str          # "poly", "ellipse"
    points: np.ndarray  # poly: (K, 2); ellipse: (cx, cy, rx, ry)
    label: int
    color: tuple
    material: int = FLAT
    part_of: int = -1  # index of the object it belongs to (building / tree), -1 if none


@dataclass
class Scene:
    """A laid-out scene: horizon, sky type, and shapes in drawing order (far to near)."""
    seed: int
    horizon: float
    sky: str
    ground: tuple
    shapes: list = field(default_factory=list)
    objects: list = field(default_factory=list)  # dicts describing buildings / trees


def _rect(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def _jitter(rng, color, amount=18):
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in color)


def layout(seed: int) -> Scene:
    """Lay out the scene for `seed` (deterministic, resolution-free).

    Composed like the close, building-centred views of LSUN church/outdoor: most scenes hold
    one or two large buildings whose doors and windows are about one painting-layer cell
    (8 px at 64 px) across, with trees in front of or beside them; the rest are tree groups,
    fields and roads."""
    rng = np.random.default_rng(seed)
    sky = ("clear", "clear", "overcast", "dusk")[rng.integers(4)]
    hz = rng.uniform(0.30, 0.46)
    ground = _jitter(rng, ((80, 150, 60), (110, 160, 70), (140, 160, 80))[rng.integers(3)], 12)
    scene = Scene(seed, hz, sky, ground)
    add = scene.shapes.append

    # Road: a perspective strip to a vanishing point on the horizon, or none.
    if rng.random() < 0.55:
        vx = rng.uniform(0.2, 0.8)
        bx, bw, tw = rng.uniform(0.15, 0.85), rng.uniform(0.2, 0.5), rng.uniform(0.01, 0.05)
        pts = np.array([[vx - tw, hz], [vx + tw, hz], [bx + bw, 1.02], [bx - bw, 1.02]])
        add(Shape("poly", pts, ROAD, _jitter(rng, (115, 112, 108)), ASPHALT))

    # Clouds: clusters of ellipses kept clear of the horizon.
    cloud = SKY_TYPES[sky][2]
    for _ in range(rng.integers(2, 6) if sky == "overcast" else rng.integers(0, 4)):
        rx = rng.uniform(0.07, 0.16)
        cx, cy = rng.uniform(-0.05, 1.05), rng.uniform(0.04, max(0.05, hz - 0.1))
        col = _jitter(rng, cloud, 8)
        for _ in range(rng.integers(2, 5)):
            erx = rx * rng.uniform(0.5, 1.0)
            ery = min(erx * rng.uniform(0.35, 0.6), hz - 0.03 - cy)
            ex = cx + rng.uniform(-rx, rx)
            if ery > 0.008:
                add(Shape("ellipse", np.array([ex, cy, erx, ery]), CLOUD, col, SOFT))

    # Objects standing on the ground: (kind, base, scale), drawn far (high base) to near.
    objects = []
    if rng.random() < 0.87:  # a building scene: one main building, maybe a second behind
        main_base = rng.uniform(0.8, 0.96)
        objects.append(("building", main_base, 1.0))
        if rng.random() < 0.5:
            objects.append(("building", main_base - rng.uniform(0.06, 0.16), 0.8))
        for _ in range(rng.integers(1, 4) if rng.random() < 0.8 else 0):
            objects.append(("tree", rng.uniform(main_base - 0.12, 1.0), 1.0))
    else:  # tree groups, fields and roads
        for _ in range(rng.integers(0, 7)):
            objects.append(("tree", hz + (1 - hz) * rng.uniform(0.35, 1.0), 1.0))
    for kind, base, scale in sorted(objects, key=lambda o: o[1]):
        obj = len(scene.objects)
        make = _building if kind == "building" else _tree
        scene.objects.append(make(rng, scene, float(base), scale, obj))
    return scene


# Door and window sizes in unit coordinates: at 64 px a door is 6-9 px wide and 12-16 px tall
# (one painting-layer cell by 1.5-2), a window 4.5-6.5 px wide.
DOOR_W, DOOR_H, WINDOW_W, WINDOW_H = (0.10, 0.14), (0.19, 0.25), (0.07, 0.10), (0.08, 0.12)


def _building(rng, scene, base, scale, obj):
    add = scene.shapes.append
    w = scale * rng.uniform(0.6, 0.92)
    h = scale * rng.uniform(0.4, 0.58)
    x0 = rng.uniform(-0.15 * w, 1.0 - 0.85 * w)
    x1, top = x0 + w, base - h
    brick = rng.random() < 0.3
    wall = _jitter(rng, WALL_COLORS[rng.integers(len(WALL_COLORS))])
    add(Shape("poly", _rect(x0, top, x1, base), BUILDING, wall, BRICK if brick else PLASTER, obj))

    roof_kind = ("gable", "gable", "hip", "flat", "dome")[rng.integers(5)]
    rcol = _jitter(rng, ROOF_COLORS[rng.integers(len(ROOF_COLORS))])
    over = w * 0.05
    if roof_kind == "gable":
        rh = w * rng.uniform(0.2, 0.38)
        pk = x0 + w * rng.uniform(0.4, 0.6)
        add(Shape("poly", np.array([[x0 - over, top], [x1 + over, top], [pk, top - rh]]),
                  ROOF, rcol, FLAT, obj))
    elif roof_kind == "hip":
        rh = w * rng.uniform(0.12, 0.25)
        ins = w * rng.uniform(0.15, 0.3)
        add(Shape("poly", np.array([[x0 - over, top], [x1 + over, top], [x1 - ins, top - rh],
                                    [x0 + ins, top - rh]]), ROOF, rcol, FLAT, obj))
    elif roof_kind == "flat":
        add(Shape("poly", _rect(x0 - over * 0.5, top - 0.05, x1 + over * 0.5, top + 0.002),
                  ROOF, rcol, FLAT, obj))
    else:
        dw = w * rng.uniform(0.22, 0.34)
        cx = (x0 + x1) / 2
        add(Shape("ellipse", np.array([cx, top, dw, dw * rng.uniform(0.8, 1.2)]), DOME,
                  _jitter(rng, DOME_COLORS[rng.integers(len(DOME_COLORS))]), FLAT, obj))
        # the wall is drawn again over the dome's lower half, so the dome sits on the wall
        add(Shape("poly", _rect(x0, top, x1, base), BUILDING, wall, BRICK if brick else PLASTER,
                  obj))

    # The wall is split into 2-3 bays. The door stands in one bay at the wall's foot; windows
    # fill the other bays beside it and, where the wall is tall enough, a row above.
    bays = int(np.clip(w // 0.2, 2, 3))
    bay = w / bays
    ww, wh = rng.uniform(*WINDOW_W), rng.uniform(*WINDOW_H)
    door = None
    door_bay = rng.integers(bays)
    dh = min(rng.uniform(*DOOR_H), h * 0.62)
    if rng.random() < 0.85:
        dw = min(rng.uniform(*DOOR_W), bay * 0.8)
        dx = x0 + (door_bay + 0.5) * bay - dw / 2
        door = (dx, base - dh, dx + dw, base)
        add(Shape("poly", _rect(*door), DOOR, _jitter(rng, DOOR_COLORS[rng.integers(5)], 10),
                  FLAT, obj))
    wcol = _jitter(rng, WINDOW_COLORS[rng.integers(len(WINDOW_COLORS))], 10)
    rows = [base - dh * 0.62]  # beside the door, level with its upper part
    if h - dh >= wh + 0.06:
        rows.append(top + (h - dh) * 0.5)
    windows = []
    for r, cy in enumerate(rows):
        for b in range(bays):
            if r == 0 and door is not None and b == door_bay:
                continue  # keep the door clear
            cx = x0 + (b + 0.5) * bay
            rect = (cx - ww / 2, cy - wh / 2, cx + ww / 2, cy + wh / 2)
            windows.append(rect)
            add(Shape("poly", _rect(*rect), WINDOW, wcol, FLAT, obj))
    return dict(kind="building", wall=(x0, top, x1, base), roof=roof_kind, door=door,
                windows=windows, brick=brick)


def _tree(rng, scene, base, scale, obj):
    add = scene.shapes.append
    depth = (base - scene.horizon) / (1.0 - scene.horizon)
    h = scale * (0.5 + 0.5 * depth) * rng.uniform(0.38, 0.7)
    cx = rng.uniform(-0.05, 1.05)
    tw = h * rng.uniform(0.05, 0.09)
    trunk = _jitter(rng, (95, 65, 40), 12)
    conifer = rng.random() < 0.35
    leaf = _jitter(rng, ((40, 110, 40), (60, 130, 45), (30, 85, 50), (85, 125, 40))[rng.integers(4)])
    if conifer:
        add(Shape("poly", _rect(cx - tw / 2, base - h * 0.25, cx + tw / 2, base), TREE, trunk, FLAT, obj))
        tiers = rng.integers(2, 5)
        for t in range(tiers):
            y1 = base - h * (0.15 + 0.85 * t / tiers)
            y0 = base - h * (0.15 + 0.85 * (t + 1.4) / tiers)
            half = h * 0.28 * (1 - 0.55 * t / tiers)
            add(Shape("poly", np.array([[cx - half, y1], [cx + half, y1], [cx, max(y0, base - h)]]),
                      TREE, _jitter(rng, leaf, 8), LEAVES, obj))
    else:
        add(Shape("poly", _rect(cx - tw / 2, base - h * 0.45, cx + tw / 2, base), TREE, trunk, FLAT, obj))
        r = h * 0.3
        ccy = base - h + r
        for _ in range(rng.integers(3, 7)):
            ex, ey = cx + rng.uniform(-0.6, 0.6) * r, ccy + rng.uniform(-0.3, 0.5) * r
            er = r * rng.uniform(0.55, 0.85)
            add(Shape("ellipse", np.array([ex, ey, er, er * rng.uniform(0.85, 1.0)]), TREE,
                      _jitter(rng, leaf, 8), LEAVES, obj))
    return dict(kind="tree", base=base, x=cx, height=h, conifer=conifer)


@lru_cache(maxsize=None)
def _textures(size: int) -> np.ndarray:
    """Per-material multiplicative texture tiles, (materials, 2*size, 2*size), fixed per size."""
    rng = np.random.default_rng(12345 + size)
    n = 2 * size
    tex = np.zeros((7, n, n), np.float32)

    def smooth_noise(cell):
        small = rng.standard_normal((max(2, n // cell), max(2, n // cell))).astype(np.float32)
        return cv2.resize(small, (n, n), interpolation=cv2.INTER_CUBIC)

    px = size / 64.0
    tex[GRASS_TEX] = 0.07 * smooth_noise(max(1, int(2 * px))) + 0.035 * rng.standard_normal((n, n))
    tex[LEAVES] = 0.16 * smooth_noise(max(1, int(2 * px))) + 0.05 * rng.standard_normal((n, n))
    tex[PLASTER] = 0.04 * smooth_noise(max(1, int(4 * px)))
    tex[ASPHALT] = 0.05 * rng.standard_normal((n, n))
    tex[SOFT] = 0.04 * smooth_noise(max(1, int(4 * px)))
    # Brick: rows of bricks with dark mortar lines, alternate rows offset by half a brick.
    bh, bw = max(2, int(round(2 * px))), max(4, int(round(4 * px)))
    y, x = np.mgrid[0:n, 0:n]
    row = y // bh
    mortar = (y % bh == 0) | (((x + (row % 2) * (bw // 2)) % bw) == 0)
    tex[BRICK] = np.where(mortar, -0.28, 0.0) + 0.05 * rng.standard_normal((n, n))
    return tex


def stylize(scene: Scene, style: int) -> tuple[Scene, tuple, tuple]:
    """The same shapes with other colours and textures: per object class one random colour and
    surface (the same for all its shapes), a random sky gradient and ground. The label map is
    unchanged, so a unit that sees shapes keeps its IoU and one that sees colour or texture
    loses it (Network Dissection's shape-vs-texture test). Returns (scene, sky top, sky bottom)."""
    rng = np.random.default_rng((scene.seed, int(style), 11))
    colour = {c: tuple(int(v) for v in rng.integers(20, 236, 3)) for c in range(len(INDEX))}
    surface = {c: int(rng.integers(0, 7)) for c in range(len(INDEX))}
    shapes = [replace(sh, color=_jitter(rng, colour[sh.label], 10), material=surface[sh.label])
              for sh in scene.shapes]
    top, bottom = (tuple(int(v) for v in rng.integers(20, 236, 3)) for _ in range(2))
    return replace(scene, shapes=shapes, ground=colour[GRASS]), top, bottom


def render(scene_or_seed, size: int = 64, materials: bool = False, style: int | None = None):
    """Rasterise a scene: returns (image uint8 (S, S, 3) RGB, labels uint8 (S, S)), and with
    `materials` the surface map too (uint8 (S, S): FLAT, GRASS_TEX, LEAVES, ...). `style`: draw
    it with other colours and textures, same labels (see `stylize`)."""
    scene = layout(scene_or_seed) if isinstance(scene_or_seed, (int, np.integer)) else scene_or_seed
    S = int(size)
    hz_px = scene.horizon * S
    top, bottom, _ = SKY_TYPES[scene.sky]
    ground_surface = GRASS_TEX
    if style is not None:
        scene, top, bottom = stylize(scene, style)
        ground_surface = int(np.random.default_rng((scene.seed, int(style), 12)).integers(0, 7))
    img = np.empty((S, S, 3), np.float32)
    t = np.clip((np.arange(S) + 0.5) / max(hz_px, 1.0), 0, 1)[:, None]
    img[:] = (np.array(top, np.float32) * (1 - t) + np.array(bottom, np.float32) * t)[:, None, :]
    lab = np.full((S, S), SKY, np.uint8)
    mat = np.zeros((S, S), np.uint8)
    ground = int(round(hz_px))
    img[ground:] = scene.ground
    lab[ground:] = GRASS
    mat[ground:] = ground_surface
    img = np.ascontiguousarray(img)
    scale = S * (1 << SHIFT)
    for sh in scene.shapes:
        if sh.kind == "poly":
            pts = [np.round(sh.points * scale).astype(np.int32)]
            cv2.fillPoly(img, pts, sh.color, cv2.LINE_8, SHIFT)
            cv2.fillPoly(lab, pts, sh.label, cv2.LINE_8, SHIFT)
            cv2.fillPoly(mat, pts, sh.material, cv2.LINE_8, SHIFT)
        else:
            cx, cy, rx, ry = np.round(sh.points * scale).astype(np.int64).tolist()
            args = ((cx, cy), (max(rx, 1), max(ry, 1)), 0, 0, 360)
            cv2.ellipse(img, *args, sh.color, -1, cv2.LINE_8, SHIFT)
            cv2.ellipse(lab, *args, sh.label, -1, cv2.LINE_8, SHIFT)
            cv2.ellipse(mat, *args, sh.material, -1, cv2.LINE_8, SHIFT)
    tex = _textures(S)
    rng = np.random.default_rng((scene.seed, 7))
    oy, ox = rng.integers(0, S, 2)
    mod = tex[:, oy:oy + S, ox:ox + S]
    factor = 1.0 + np.take_along_axis(mod, mat[None].astype(np.intp), 0)[0]
    img *= factor[:, :, None]
    img = np.clip(img, 0, 255).astype(np.uint8)
    return (img, lab, mat) if materials else (img, lab)


def to_tensor_images(images: np.ndarray):
    """uint8 (N, H, W, 3) → float tensor (N, 3, H, W) in [-1, 1], the models' image convention."""
    import torch
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def to_uint8_images(images) -> np.ndarray:
    """Float tensor (N, 3, H, W) in [-1, 1] → uint8 (N, H, W, 3)."""
    x = images.detach().float().clamp(-1, 1).add(1).mul(127.5).round()
    return x.byte().permute(0, 2, 3, 1).cpu().numpy()


def render_batch(seeds, size: int = 64, style: int | None = None):
    """Render several seeds: (images uint8 (N, S, S, 3), labels uint8 (N, S, S)); `style`:
    stylized (other colours and textures, same labels)."""
    pairs = [render(int(s), size, style=style) for s in seeds]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


class SceneStream:
    """Endless (images, labels) torch batches rendered on the fly, for training.

    Seeds run from `start` upward, so a run resumed at step k continues with the same data
    (pass start = initial_start + k * batch_size). Nothing is stored on disk.
    """

    def __init__(self, size=64, batch_size=32, start=0, stop=HELDOUT_SEED):
        self.size, self.batch_size, self.next_seed, self.stop = size, batch_size, start, stop

    def __iter__(self):
        return self

    def __next__(self):
        import torch
        seeds = [self.next_seed + i for i in range(self.batch_size)]
        if seeds[-1] >= self.stop:
            raise StopIteration
        self.next_seed += self.batch_size
        images, labels = render_batch(seeds, self.size)
        return to_tensor_images(images), torch.from_numpy(labels).long()


def world_stats(samples: int = 2000, size: int = 64, grid: int = 8, start: int = 0,
                min_pixels: int = 4, progress: bool = False) -> dict:
    """How big and how common each concept is, so the world can be checked against the
    painting layer's scale.

    Per concept: `fraction` (share of all pixels), `presence` (share of scenes showing it),
    `median_box_px` ([w, h] median bounding box of its connected components at `size` px;
    slivers under `min_pixels` pixels, left by occlusion, are not objects and are skipped) and
    `median_box_cells` (the same in cells of a `grid`×`grid` painting layer)."""
    from tqdm import tqdm

    from ganpaint.world.labels import CONCEPTS
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    k = len(CONCEPTS)
    pixels, present = np.zeros(k, np.int64), np.zeros(k, np.int64)
    boxes = [[] for _ in range(k)]
    for seed in tqdm(range(start, start + samples), disable=not progress, desc="world-stats"):
        _, lab = render(seed, size)
        counts = np.bincount(lab.reshape(-1), minlength=k)
        pixels += counts
        present += counts > 0
        for c in np.nonzero(counts)[0]:
            n, _, st, _ = cv2.connectedComponentsWithStats((lab == c).astype(np.uint8), 8)
            keep = st[1:, cv2.CC_STAT_AREA] >= min_pixels
            boxes[c].extend(st[1:][keep][:, [cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT]].tolist())
    cell = size / grid
    out = {}
    for c, name in enumerate(CONCEPTS):
        med = np.median(np.array(boxes[c]), 0) if boxes[c] else np.array([0.0, 0.0])
        out[name] = {"fraction": float(pixels[c] / (samples * size * size)),
                     "presence": float(present[c] / samples),
                     "median_box_px": [float(v) for v in med],
                     "median_box_cells": [round(float(v) / cell, 3) for v in med]}
    return out
