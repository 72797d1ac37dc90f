"""Quality of a scene generator, measured with the shipped segmenter (the bars of the model card).

class balance (pixel fractions per concept, generated vs rendered), a Fréchet distance on the
segmenter's deepest features (next to the floor: two disjoint sets of renders), optionally the
same distance on a second, independent network's features (the scene classifier: the shipped
GAN's semantic discriminator is built on the segmenter's encoder, so the segmenter's own
distance is not an outside judge) with references that say what a distance means (renders
blurred by a 2× and a 4× bilinear down-then-up resize), and, given a dissection, the best unit
IoUs, the causal effects (tree ablation, door insertion by context) and strokes painted as a
person paints them (`experiments.painting`).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ganpaint.world.scenes import HELDOUT_SEED, render_batch, to_tensor_images


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


def blurred(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Images passed through a bilinear down-then-up resize by `factor`: the reference
    distances say how far from renders a generator is, in blur a person can picture."""
    size = x.shape[-2:]
    small = F.interpolate(x, scale_factor=1 / factor, mode="bilinear", align_corners=False,
                          antialias=True)
    return F.interpolate(small, size=size, mode="bilinear", align_corners=False)


def eval_gan(generator, segmenter, dissection=None, samples=1000, batch_size=50, seed=1,
             progress=True, judge=None, painting=True) -> dict:
    """The figures of the model card's quality bars for `generator` (see `check_bars`).

    judge: optional callable images → (N, D) features for a second Fréchet distance.
    `painting`: with a dissection, also paint strokes as a person would (`experiments.painting`).
    The segmenter's Fréchet distance needs its optional `features()`; a segmenter without it
    (only `concepts` and `segment()`, the required protocol) gets every other figure, and the
    skipped distance is named in `notes`, so custom segmenters can be used here too."""
    concepts = segmenter.concepts
    size = None
    judges, notes = {}, []
    if callable(getattr(segmenter, "features", None)):
        judges["fd"] = segmenter.features
    else:
        notes.append(f"Fréchet distance on the segmenter's features skipped: "
                     f"{type(segmenter).__name__} has no features() (optional in the Segmenter "
                     f"protocol)")
    if judge is not None:
        judges["fd_judge"] = judge
    # disjoint renders (the floor), and the same blurred: what a distance of blur looks like
    feats = {k: {"gen": [], "ren": [], "floor": [], "ref2x": [], "ref4x": []} for k in judges}
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
        batches.update(ref2x=blurred(batches["floor"], 2), ref4x=blurred(batches["floor"], 4))
        for k, fn in judges.items():
            for part in feats[k]:
                feats[k][part].append(fn(batches[part]).cpu().numpy())
    result = {"samples": samples,
              "fractions": {"generated": _fractions(gen_labels, concepts),
                            "renders": _fractions(ren_labels, concepts)}}
    if notes:
        result["notes"] = notes
    for k, f in feats.items():
        f = {part: np.concatenate(v) for part, v in f.items()}
        result[k] = frechet(f["gen"], f["ren"])
        result[k + "_floor"] = frechet(f["floor"], f["ren"])
        for ref in ("ref2x", "ref4x"):
            result[f"{k}_{ref}"] = frechet(f[ref], f["ren"])
    if dissection is not None:
        from ganpaint.apps import experiments
        from ganpaint.core.intervene import Painter
        painter = Painter(generator, dissection)
        lay = dissection["layers"][painter.layer]
        result["layer"] = painter.layer
        result["best_iou"] = {c: (r[0]["iou"] if r else 0.0) for c, r in lay["ranking"].items()}
        # a unit's region covers a share q of all pixels, so IoU ≤ min(q, f) / max(q, f) for a
        # concept covering a share f: large concepts cannot score high at q = 0.01
        if "best_threshold_iou" in lay:
            result["best_threshold_iou"] = {c: v["iou"] for c, v in lay["best_threshold_iou"].items()}
            result["best_threshold_tail"] = lay.get("tail")
        q = painter.dissection.quantile
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
        result["top_quantile_iou"] = {c: result["best_iou"].get(c, 0.0) for c in ("tree", "door", "window")}
        if painting:
            result.update(experiments.painting(painter, segmenter, progress=progress))
    return result


def check_bars(r: dict) -> list[tuple[str, bool, str]]:
    """The world issue's quality bars as (name, passed, figures) rows; every verdict is
    computed from the figures; passed is None for figures that are reported, not judged."""
    rows = []
    g, ren = r["fractions"]["generated"], r["fractions"]["renders"]
    for c in g:
        if ren[c] <= 0:
            continue
        rel = g[c] / ren[c] - 1
        bar = 0.5 if c in ("door", "dome") else 0.25
        rows.append((f"fraction {c}", abs(rel) <= bar,
                     f"{g[c]:.4f} vs {ren[c]:.4f} ({rel:+.0%}, bar ±{bar:.0%})"))
    # The classifier's distance must sit below that of renders blurred by a 2× resize. The
    # segmenter's is reported only (None): it was trained to read blurred images alike, so
    # blur barely moves it, and the semantic discriminator trains the GAN on its features.
    for k, judge, bar in (("fd", "segmenter", False), ("fd_judge", "classifier", True)):
        if f"{k}_ref2x" in r:
            rows.append((f"Fréchet distance ({judge})", (r[k] < r[f"{k}_ref2x"]) if bar else None,
                         f"{r[k]:.3f}; renders blurred 2× {r[f'{k}_ref2x']:.3f}, 4× "
                         f"{r[f'{k}_ref4x']:.3f}, floor {r[f'{k}_floor']:.3f}"
                         + (" (bar: below 2×)" if bar else " (reported)")))
    rows += [("note", None, note) for note in r.get("notes", [])]  # e.g. a skipped distance
    if "tree_removed_top20" in r:
        rows.append(("tree removed by top-20", r["tree_removed_top20"] >= 0.75,
                     f"{r['tree_removed_top20']:.3f} (bar 0.75)"))
        draws = r.get("tree_change_random20_draws")
        each = f"; draws {', '.join(f'{d:+.3f}' for d in draws)}" if draws else ""
        rows.append(("tree change by random-20", r["tree_change_random20"] < 0.10,
                     f"{r['tree_change_random20']:.3f} mean size (bar < 0.10{each})"))
        iou = ", ".join(f"{c} {v:.3f}" for c, v in r["top_quantile_iou"].items())
        rows.append(("top-quantile IoU", None, iou))
    if "door_dab" in r:
        dd, ts = r["door_dab"], r["tree_stroke"]
        na = lambda v, f: "n/a" if v is None else format(v, f)  # noqa: E731
        hard = dd.get("hard_edge", {})
        edge = (f"; soft edge {r['feather']}, hard-edged cell {na(hard.get('wall_success'), '.0%')}"
                if r.get("feather") else "")
        rows.append(("door dab at a wall's foot", (dd["wall_success"] or 0) >= 0.7,
                     f"{na(dd['wall_success'], '.0%')} of {len(dd['wall_gain'])} scenes gain ≥ "
                     f"{dd['min_gain']} door px (bar 70 %{edge})"))
        rows.append(("door dab in the sky", dd["sky_success"] is not None and dd["sky_success"] <= 0.1,
                     f"{na(dd['sky_success'], '.0%')} of {len(dd['sky_gain'])} scenes (bar ≤ 10 %)"))
        rows.append(("remove tree: share left", ts["left_median"] is not None and ts["left_median"] <= 0.35,
                     f"median {na(ts['left_median'], '.3f')} over {len(ts['left'])} scenes (bar ≤ 0.35)"))
        rows.append(("remove tree: background", (ts["background_share"] or 0) >= 0.8,
                     f"{na(ts['background_share'], '.0%')} of removed tree pixels become sky, "
                     f"grass, road or building (bar 80 %)"))
        rows.append(("draw tree on grass", (r["tree_draw_success"] or 0) >= 0.7,
                     f"{na(r['tree_draw_success'], '.0%')} of {len(r['tree_draw_gain'])} scenes "
                     f"gain ≥ {r['tree_draw_min_gain']} tree px (bar 70 %)"))
    return rows
