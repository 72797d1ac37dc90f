"""Quality of a scene generator, measured with the shipped segmenter (the bars of the model card).

class balance (pixel fractions per concept, generated vs rendered), a Fréchet distance on the
segmenter's deepest features (next to the floor: two disjoint sets of renders), optionally the
same distance on a second, independent network's features (the scene classifier: the shipped
GAN's semantic discriminator is built on the segmenter's encoder, so the segmenter's own
distance is not an outside judge), and, given a dissection, the best unit IoUs and the causal
effects (tree ablation, door insertion by context).
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from .scenes import HELDOUT_SEED, render_batch, to_tensor_images


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D)."""
    from scipy import linalg
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = np.real(linalg.sqrtm(s1 @ s2))
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def _fractions(labels_iter, concepts):
    counts = np.zeros(len(concepts), np.int64)
    for lab in labels_iter:
        counts += np.bincount(lab.reshape(-1).cpu().numpy(), minlength=len(concepts))
    return {c: float(v / counts.sum()) for c, v in zip(concepts, counts)}


def eval_gan(generator, segmenter, dissection=None, samples=1000, batch_size=50, seed=1,
             progress=True, judge=None) -> dict:
    """judge: optional callable images → (N, D) features for a second Fréchet distance."""
    concepts = segmenter.concepts
    size = None
    judges = {"fd": segmenter.features} | ({"fd_judge": judge} if judge is not None else {})
    feats = {k: {"gen": [], "ren": [], "floor": []} for k in judges}
    gen_labels, ren_labels = [], []
    for i in tqdm(range(0, samples, batch_size), disable=not progress, desc="eval-gan"):
        idx = list(range(i, min(samples, i + batch_size)))
        imgs = generator(generator.latents(idx, seed))
        size = imgs.shape[-1]
        gen_labels.append(segmenter.segment(imgs))
        batches = {"gen": imgs}
        for part, offset in (("ren", 0), ("floor", samples)):
            r, _ = render_batch([HELDOUT_SEED + 500_000 + offset + j for j in idx], size)
            batches[part] = to_tensor_images(r).to(imgs.device)
        ren_labels.append(segmenter.segment(batches["ren"]))
        for k, fn in judges.items():
            for part, x in batches.items():
                feats[k][part].append(fn(x).cpu().numpy())
    result = {"samples": samples,
              "fractions": {"generated": _fractions(gen_labels, concepts),
                            "renders": _fractions(ren_labels, concepts)}}
    for k, f in feats.items():
        f = {part: np.concatenate(v) for part, v in f.items()}
        result[k] = frechet(f["gen"], f["ren"])
        result[k + "_floor"] = frechet(f["floor"], f["ren"])
    if dissection is not None:
        from . import experiments
        from .intervene import Painter
        painter = Painter(generator, dissection)
        lay = dissection["layers"][painter.layer]
        result["layer"] = painter.layer
        result["best_iou"] = {c: (r[0]["iou"] if r else 0.0) for c, r in lay["ranking"].items()}
        # a unit's region covers a share q of all pixels, so IoU ≤ min(q, f) / max(q, f) for a
        # concept covering a share f: large concepts cannot score high at q = 0.01
        if "best_threshold_iou" in lay:
            result["best_threshold_iou"] = {c: v["iou"] for c, v in lay["best_threshold_iou"].items()}
            result["best_threshold_tail"] = lay.get("tail")
        q = dissection["quantile"]
        result["iou_cap"] = {c: (min(q, f) / max(q, f) if f > 0 else 0.0)
                             for c, f in lay["concept_pixel_fraction"].items()}
        n = min(samples, 500)
        ab = experiments.ablation(painter, segmenter, "tree", [20], n, progress=progress)
        result["tree_removed_top20"] = ab["removed"][0]
        # mean size of the change over the random draws (signed changes could cancel out)
        result["tree_change_random20_draws"] = [d[0] for d in ab["random_draws"]]
        result["tree_change_random20"] = float(np.mean(np.abs(result["tree_change_random20_draws"])))
        ins = experiments.insertion(painter, segmenter, "door", 20, n, progress=progress)
        ctx = ins["context"]
        result["door_gain_wall"] = ctx.get("building", {}).get("mean_added", 0.0)
        result["door_gain_sky"] = ctx.get("sky", {}).get("mean_added", 0.0)
        result["door_context"] = ctx
        result["rankings"] = {"tree": ab["ranking"], "door": ins["ranking"]}
    return result


def check_bars(r: dict) -> list[tuple[str, bool, str]]:
    """The issue's quality bars as (name, passed, figures) rows."""
    rows = []
    g, ren = r["fractions"]["generated"], r["fractions"]["renders"]
    for c in ("sky", "grass", "tree", "building", "roof", "window"):
        rel = g[c] / max(ren[c], 1e-9) - 1
        rows.append((f"fraction {c}", abs(rel) <= 0.35, f"{g[c]:.4f} vs {ren[c]:.4f} ({rel:+.0%})"))
    rows.append(("fraction door", g["door"] >= 0.5 * ren["door"], f"{g['door']:.4f} vs {ren['door']:.4f}"))
    rows.append(("Fréchet distance", True, f"{r['fd']:.3f} (floor {r['fd_floor']:.3f}), segmenter features"))
    if "fd_judge" in r:
        rows.append(("Fréchet distance", True, f"{r['fd_judge']:.3f} (floor {r['fd_judge_floor']:.3f}), "
                     "classifier features"))
    if "best_iou" in r:
        bars = {"sky": .25, "grass": .25, "building": .25, "tree": .15, "window": .15, "door": .08}
        for c, t in bars.items():
            v = r["best_iou"].get(c, 0.0)
            cap = r.get("iou_cap", {}).get(c)
            note = f"; at most {cap:.3f} at this quantile" if cap is not None else ""
            bt = r.get("best_threshold_iou", {}).get(c)
            if bt is not None:  # judged at each unit's best threshold, as in GAN Dissection 2018
                rows.append((f"best IoU {c}", bt >= t, f"{bt:.3f} at the best threshold "
                             f"(bar {t}); {v:.3f} at the top quantile{note}"))
            else:
                rows.append((f"best IoU {c}", v >= t, f"{v:.3f} (bar {t}{note})"))
        rows.append(("tree removed by top-20", r["tree_removed_top20"] >= 0.6, f"{r['tree_removed_top20']:.3f} (bar 0.6)"))
        draws = r.get("tree_change_random20_draws")
        each = f"; draws {', '.join(f'{d:+.3f}' for d in draws)}" if draws else ""
        rows.append(("tree change by random-20", r["tree_change_random20"] < 0.15,
                     f"{r['tree_change_random20']:.3f} mean size (bar < 0.15{each})"))
        w, s = r["door_gain_wall"], r["door_gain_sky"]
        rows.append(("door on wall vs sky", w >= 5 * max(s, 0) and w > 0, f"{w:.2f} vs {s:.2f} px"))
    return rows
