"""Causal experiments: what removing units takes away, and where inserting units adds things.

- `ablation`: zero a concept's top-k units (everywhere, or only at the feature cells where the
  concept is) and count the concept's pixels before and after, with k random units as control
  (several draws: one draw can hold a strong unit by chance).
- `insertion`: insert a concept's top units at one random feature cell and count the concept
  pixels added around it, grouped by what the segmenter saw at that cell before.
Seeds are fixed, so results reproduce; latents come from a seed apart from the dissection's.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from ganpaint.core.intervene import FEATHER, Painter, Stroke, cell_shares
from ganpaint.world.labels import lookup
from ganpaint.world.scenes import to_uint8_images

EXPERIMENT_SEED = 1  # latents for experiments: not the dissection's default seed 0


def _batches(samples, batch_size):
    for i in range(0, samples, batch_size):
        yield list(range(i, min(samples, i + batch_size)))


def _check_count(name, values, low, n_units, layer):
    """Unit counts outside [low, n_units] would silently edit the wrong units (a negative k
    slices from the end): refuse them, naming the valid range."""
    bad = [v for v in values if not low <= int(v) <= n_units]
    if bad:
        raise ValueError(f"{name} must be in {low}..{n_units} (the units of {layer}), got {bad}")


def _cell_mask(labels, c, grid):
    """(N, h, w) float: feature cells where concept c occupies any pixel."""
    m = (labels == c).float()[:, None]
    return F.adaptive_max_pool2d(m, grid)[:, 0]


def ablation(painter: Painter, segmenter, concept: str, ks=(0, 1, 2, 4, 8, 12, 16, 20, 30),
             samples=500, batch_size=25, seed=EXPERIMENT_SEED, local=False, progress=True,
             strip: Path | None = None, by: str | None = None, random_draws: int = 5) -> dict:
    """`by`: "iou", "causal" or "local" (learned rankings); default: the learned one that fits
    (`local` edits prefer the local ranking), else IoU.
    `strip`: a PNG path for six scenes of the first batch before (top) and after (bottom)
    ablating k = 20 units; scenes that show the concept (≥ 1 % of their pixels) come first.
    `random_removed` is the mean over `random_draws` random unit sets; each draw is kept too."""
    if random_draws < 1:
        raise ValueError(f"random_draws must be ≥ 1 (the random baseline is their mean), not {random_draws}")
    g = painter.generator
    c = lookup(concept, segmenter.concepts)
    name = segmenter.concepts[c]
    ks = sorted({int(k) for k in ks})
    n_units = painter.dissection.units(painter.layer)
    _check_count("k", ks, 0, n_units, painter.layer)
    by = by or painter.dissection.best_ranking(name, painter.layer, local)
    ranked = painter.dissection.top_units(name, n_units, by, painter.layer)
    if len(ranked) < max(ks):  # units with zero IoU come after, in index order
        ranked += [u for u in range(n_units) if u not in set(ranked)]
    rng = np.random.default_rng(seed + 1000)
    perms = [rng.permutation(n_units).tolist() for _ in range(random_draws)]
    before = 0
    after = {k: 0 for k in ks}
    after_random = [{k: 0 for k in ks} for _ in perms]
    shots = []
    for idx in tqdm(list(_batches(samples, batch_size)), disable=not progress,
                    desc=f"ablate {name}", unit="batch"):
        z = g.latents(idx, seed)
        base = painter.render(z)
        lab = segmenter.segment(base)
        feats = painter.features(z)
        grid = feats.shape[2:]
        if local:
            cells = _cell_mask(lab, c, grid)
            region = F.interpolate(cells[:, None], size=lab.shape[-2:], mode="nearest")[:, 0] > 0
        else:
            cells = torch.ones(len(idx), *grid)
            region = torch.ones_like(lab, dtype=torch.bool)
        before += int(((lab == c) & region).sum())
        for k in ks:
            for units, acc in [(ranked[:k], after)] + [(p[:k], a) for p, a in zip(perms, after_random)]:
                if k == 0:
                    acc[k] += int(((lab == c) & region).sum())
                    continue
                edited = painter.render(z, [Stroke(units, cells)])
                acc[k] += int(((segmenter.segment(edited) == c) & region).sum())
                if strip is not None and acc is after and k == _strip_k(ks) and not shots:
                    # scenes that show the concept (≥ 1 % of their pixels) first
                    has = ((lab == c) & region).flatten(1).float().mean(1) >= 0.01
                    pick = (torch.nonzero(has)[:, 0].tolist() + torch.nonzero(~has)[:, 0].tolist())[:6]
                    shots.append((base[pick], edited[pick]))
    pixels = samples * int(np.prod(lab.shape[-2:]))
    result = {"concept": name, "layer": painter.layer, "samples": samples, "seed": seed,
              "local": bool(local), "ranking": by, "k": ks, "pixels_before": before,
              "fraction_before": before / pixels,
              "fraction_after": [after[k] / pixels for k in ks],
              "removed": [1 - after[k] / max(before, 1) for k in ks],
              "random_draws": [[1 - a[k] / max(before, 1) for k in ks] for a in after_random]}
    draws = np.array(result["random_draws"])
    result["random_removed"] = draws.mean(0).tolist()
    result["random_removed_std"] = draws.std(0).tolist()
    if strip is not None and shots:
        b, e = shots[0]
        pic = np.concatenate([np.concatenate(list(to_uint8_images(b)), 1),
                              np.concatenate(list(to_uint8_images(e)), 1)], 0)
        Image.fromarray(pic).resize((pic.shape[1] * 2, pic.shape[0] * 2), Image.NEAREST).save(strip)
        result["strip_k"] = _strip_k(ks)
    return result


def _strip_k(ks):
    return 20 if 20 in ks else max(ks)


def insertion(painter: Painter, segmenter, concept="door", units=20, samples=500,
              cells_per_sample=4, batch_size=25, seed=EXPERIMENT_SEED, quantile="0.005",
              strength=1.0, feather=0.0, progress=True) -> dict:
    """Insert `concept` at random cells; concept pixels added nearby, by context at the cell.
    Hard-edged cells by default (`feather` 0), as GAN Dissection measures insertion."""
    g = painter.generator
    c = lookup(concept, segmenter.concepts)
    name = segmenter.concepts[c]
    _check_count("units", [units], 1, painter.dissection.units(painter.layer), painter.layer)
    rng = np.random.default_rng(seed + 2000)
    added: dict[str, list] = {}
    for idx in tqdm(list(_batches(samples, batch_size)), disable=not progress,
                    desc=f"insert {name}", unit="batch"):
        z = g.latents(idx, seed)
        base = painter.render(z)
        lab = segmenter.segment(base)
        grid = painter.features(z).shape[2:]
        h, w = grid
        size = lab.shape[-1]
        ch, cw = size // h, size // w
        for _ in range(cells_per_sample):
            ys, xs = rng.integers(0, h, len(idx)), rng.integers(0, w, len(idx))
            cells = torch.zeros(len(idx), h, w)
            cells[torch.arange(len(idx)), ys, xs] = 1
            stroke = painter.stroke(name, cells, "draw", units, strength, quantile, feather=feather)
            out = painter.render(z, [stroke])
            lab2 = segmenter.segment(out)
            for i in range(len(idx)):
                y0, x0 = ys[i] * ch, xs[i] * cw
                cell = lab[i, y0:y0 + ch, x0:x0 + cw]
                ctx = segmenter.concepts[int(torch.bincount(cell.reshape(-1)).argmax())]
                # count in the cell and its 8 neighbours: an inserted object spreads a little
                sl = (slice(max(0, y0 - ch), y0 + 2 * ch), slice(max(0, x0 - cw), x0 + 2 * cw))
                gain = int((lab2[i][sl] == c).sum()) - int((lab[i][sl] == c).sum())
                added.setdefault(ctx, []).append(gain)
    context = {k: {"n": len(v), "mean_added": float(np.mean(v))}
               for k, v in sorted(added.items(), key=lambda kv: -np.mean(kv[1]))}
    return {"concept": name, "layer": painter.layer, "units": units, "quantile": quantile, "feather": feather,
            "ranking": painter.ranking(name, "draw"),
            "samples": samples, "cells_per_sample": cells_per_sample, "seed": seed,
            "pixels_per_cell": ch * cw, "context": context}


def _wall_foot(sh, building, door, ground):
    """The cell a person clicks to add a door: a plain wall cell (no door in it) whose cell
    below is mostly ground (`ground`: the grass and road indices), or the image's bottom row;
    the most wall-covered such cell. None if the scene has none. (A wall cell above a window
    is not the foot of a wall.)"""
    wall = sh[building] >= 0.5
    on_ground = sh[list(ground)].sum(0) >= 0.5
    below = torch.cat([on_ground[1:], torch.ones_like(on_ground[:1])])
    cand = wall & below & (sh[door] == 0)
    if not cand.any():
        return None
    score = torch.where(cand, sh[building], torch.full_like(sh[building], -1.0))
    return divmod(int(score.argmax()), sh.shape[-1])


def _sky_cell(sh, sky):
    """A cell of open sky (≥ 95 % sky): the highest such cell nearest the middle column."""
    h, w = sh.shape[-2:]
    ys, xs = torch.nonzero(sh[sky] >= 0.95, as_tuple=True)
    if not len(ys):
        return None
    i = int(torch.argmin(ys * w + (xs.float() - (w - 1) / 2).abs()))
    return int(ys[i]), int(xs[i])


def _grass_patch(sh, grass):
    """The 2×2-cell patch most covered by grass, if every cell of it is ≥ 70 % grass."""
    g = sh[grass]
    pool = F.avg_pool2d(g[None, None], 2, stride=1)[0, 0]
    least = -F.max_pool2d(-g[None, None], 2, stride=1)[0, 0]
    pool = torch.where(least >= 0.7, pool, torch.full_like(pool, -1.0))
    if pool.max() < 0:
        return None
    return divmod(int(pool.argmax()), pool.shape[-1])


def painting(painter: Painter, segmenter, scenes=(50, 30, 30), seed=EXPERIMENT_SEED,
             units=(10, 10, 20), min_gain=(24, 40), scan=2000, batch_size=25,
             feather=FEATHER, progress=True) -> dict:
    """Strokes as a person paints them, on the first generated scenes that qualify, in seed
    order (no picking): a one-cell "draw door" dab at the foot of a wall and the same dab in
    open sky (also measured with hard-edged cells: `door_dab.hard_edge`); "remove tree" over every cell a tree covers (> 10 % of it); "draw tree" on a
    2×2-cell patch of grass. Counts are segmenter pixels at the generator's resolution.

    `scenes`: how many scenes each figure uses (door dabs, tree removals, tree drawings);
    `units`: units per stroke for the same three; `min_gain`: door pixels gained in the 3×3
    cells around a dab, and tree pixels gained in and around a grass patch, that count as
    a success. `feather`: the strokes' soft edge, the app's by default (see `Painter.stroke`)."""
    g, concepts = painter.generator, segmenter.concepts
    B, D, T, S, G_ = (lookup(n, concepts) for n in ("building", "door", "tree", "sky", "grass"))
    background = torch.tensor([lookup(n, concepts) for n in ("sky", "grass", "road", "building")])
    ground = [lookup(n, concepts) for n in ("grass", "road")]
    n_dab, n_tree, n_draw = scenes
    wall, sky, left, drawn, moved, bg = [], [], [], [], 0, 0
    hard = {"wall": [], "sky": []}  # the same dabs with hard-edged cells
    seeds = {"wall": [], "sky": [], "tree": [], "grass": []}
    bar = tqdm(total=sum(scenes) + n_dab, disable=not progress, desc="painting", unit="scene")

    def edit(z, concept, cells, action, k, edge=feather):  # as the app paints: units chosen here
        out = painter.render(z, [painter.stroke(concept, cells, action, k, features=painter.features(z),
                                                feather=edge)])
        return segmenter.segment(out)[0]

    def around(cell, grid, size):  # the cell and its 8 neighbours, in pixels
        (y, x), (h, w) = cell, grid
        ch, cw = size // h, size // w
        return (slice(max(0, y - 1) * ch, min(h, y + 2) * ch),
                slice(max(0, x - 1) * cw, min(w, x + 2) * cw))

    for idx in _batches(scan, batch_size):
        if len(wall) >= n_dab and len(sky) >= n_dab and len(left) >= n_tree and len(drawn) >= n_draw:
            break
        z = g.latents(idx, seed)
        lab = segmenter.segment(painter.render(z))
        grid = painter.features(z).shape[2:]
        shares = cell_shares(lab, len(concepts), grid)
        size = lab.shape[-1]
        for i, sample in enumerate(idx):
            zi, li, sh = z[i:i + 1], lab[i], shares[i]
            for kind, cell, store in (("wall", _wall_foot(sh, B, D, ground), wall), ("sky", _sky_cell(sh, S), sky)):
                if cell is None or len(store) >= n_dab:
                    continue
                cells = torch.zeros(grid)
                cells[cell] = 1
                sl = around(cell, grid, size)
                before = int((li[sl] == D).sum())
                store.append(int((edit(zi, "door", cells, "draw", units[0])[sl] == D).sum()) - before)
                hard[kind].append(int((edit(zi, "door", cells, "draw", units[0], 0.0)[sl] == D).sum()) - before)
                seeds[kind].append(sample)
                bar.update(1)
            if len(left) < n_tree and (li == T).sum() >= 16:
                cells = (sh[T] > 0.1).float()
                after = edit(zi, "tree", cells, "remove", units[1])
                was = li == T
                left.append(int((after[was] == T).sum()) / int(was.sum()))
                gone = was & (after != T)
                moved += int(gone.sum())
                bg += int(torch.isin(after[gone], background).sum())
                seeds["tree"].append(sample)
                bar.update(1)
            patch = _grass_patch(sh, G_) if len(drawn) < n_draw else None
            if patch is not None:
                cells = torch.zeros(grid)
                cells[patch[0]:patch[0] + 2, patch[1]:patch[1] + 2] = 1
                ch, cw = size // grid[0], size // grid[1]  # the patch grown by one cell
                sl = (slice(max(0, patch[0] - 1) * ch, min(grid[0], patch[0] + 3) * ch),
                      slice(max(0, patch[1] - 1) * cw, min(grid[1], patch[1] + 3) * cw))
                gain = int((edit(zi, "tree", cells, "draw", units[2])[sl] == T).sum()) - int((li[sl] == T).sum())
                drawn.append(gain)
                seeds["grass"].append(sample)
                bar.update(1)
    bar.close()
    rate = lambda v, t: float(np.mean(np.array(v) >= t)) if v else None  # noqa: E731
    return {"layer": painter.layer, "seed": seed, "units": list(units), "feather": feather,
            "door_dab": {"wall_success": rate(wall, min_gain[0]), "sky_success": rate(sky, min_gain[0]),
                         "wall_gain": wall, "sky_gain": sky, "min_gain": min_gain[0],
                         "hard_edge": {"wall_success": rate(hard["wall"], min_gain[0]),
                                       "sky_success": rate(hard["sky"], min_gain[0])},
                         "ranking": painter.ranking("door", "draw")},
            "tree_stroke": {"left_median": float(np.median(left)) if left else None,
                            "background_share": bg / moved if moved else None, "left": left,
                            "ranking": painter.ranking("tree")},
            "tree_draw_success": rate(drawn, min_gain[1]), "tree_draw_gain": drawn,
            "tree_draw_ranking": painter.ranking("tree", "draw"),
            "tree_draw_min_gain": min_gain[1], "scenes": seeds}


def save(result: dict, out_dir, stem: str):
    """Write an experiment's result as `<stem>.json` in out_dir (and return its path)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1))
    return out_dir / f"{stem}.json"
