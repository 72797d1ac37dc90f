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

from .intervene import Painter, Stroke
from .labels import lookup
from .ranking import best_ranking, top_units
from .scenes import to_uint8_images

EXPERIMENT_SEED = 1  # latents for experiments: not the dissection's default seed 0


def _batches(samples, batch_size):
    for i in range(0, samples, batch_size):
        yield list(range(i, min(samples, i + batch_size)))


def _cell_mask(labels, c, grid):
    """(N, h, w) float: feature cells where concept c occupies any pixel."""
    m = (labels == c).float()[:, None]
    return F.adaptive_max_pool2d(m, grid)[:, 0]


def ablation(painter: Painter, segmenter, concept: str, ks=(0, 1, 2, 4, 8, 12, 16, 20, 30),
             samples=500, batch_size=25, seed=EXPERIMENT_SEED, local=False, progress=True,
             strip: Path | None = None, by: str | None = None, random_draws: int = 5) -> dict:
    """`by`: "iou", "causal" or "local" (learned rankings); default: the learned one that fits
    (`local` edits prefer the local ranking), else IoU.
    `strip`: a PNG path for six scenes before (top) and after (bottom) ablating k = 20 units.
    `random_removed` is the mean over `random_draws` random unit sets; each draw is kept too."""
    g = painter.generator
    c = lookup(concept, segmenter.concepts)
    name = segmenter.concepts[c]
    ks = sorted({int(k) for k in ks})
    n_units = painter.dissection["layers"][painter.layer]["units"]
    by = by or best_ranking(painter.dissection, name, painter.layer, local)
    ranked = top_units(painter.dissection, name, painter.layer, n_units, by)
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
                    shots.append((base[:6], edited[:6]))
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
              strength=1.0, progress=True) -> dict:
    """Insert `concept` at random cells; concept pixels added nearby, by context at the cell."""
    g = painter.generator
    c = lookup(concept, segmenter.concepts)
    name = segmenter.concepts[c]
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
            stroke = painter.stroke(name, cells, "draw", units, strength, quantile)
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
    return {"concept": name, "layer": painter.layer, "units": units, "quantile": quantile,
            "ranking": painter.ranking(name),
            "samples": samples, "cells_per_sample": cells_per_sample, "seed": seed,
            "pixels_per_cell": ch * cw, "context": context}


def save(result: dict, out_dir, stem: str):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1))
    return out_dir / f"{stem}.json"
