"""Single units whose peak activation tells whether a concept is in an image.

Network Dissection's finding: a network trained on scene labels only holds units that detect
objects it was never told about. One unit's *peak* (its largest activation over the image),
thresholded, predicts the concept's presence (in the reference, "peak > 23.4" of one unit tells
airliner/warplane images from the rest at 85.6 %). Here, for each concept of the probe set:
fit, on one part of the probe images, the unit and threshold with the best balanced accuracy
(mean of the rates on images with and without the concept), then report that accuracy on other,
held-out probe images, with the histograms of the unit's peaks for both groups.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

MIN_SHARE = 0.005  # a concept is "in" an image when it covers at least this share of its pixels
MIN_IMAGES = 10  # concepts with fewer images with (or without) them are not scored


def peaks_and_presence(source, layer: str, indices, batch_size=50, min_share=MIN_SHARE,
                       progress=False):
    """(peaks (N, U): each unit's maximum activation per image, present (N, C) bool: whether
    each concept covers at least `min_share` of the image) for probe samples `indices`."""
    from tqdm import tqdm
    indices = list(indices)
    peaks, present = [], []
    for i in tqdm(range(0, len(indices), batch_size), disable=not progress, desc=f"peaks {layer}",
                  unit="batch"):
        acts, labels, _ = source.batch(indices[i:i + batch_size], [layer])
        peaks.append(acts[layer].amax((2, 3)).float().cpu())
        counts = torch.nn.functional.one_hot(labels.reshape(len(labels), -1),
                                             len(source.concepts)).sum(1)
        # a share of one image's pixels: with several label maps (N, K, S, S) each pixel is
        # counted once per map, and the maps' concepts are disjoint
        present.append(counts >= min_share * labels.shape[-1] * labels.shape[-2])
    return torch.cat(peaks), torch.cat(present)


def best_thresholds(peaks: torch.Tensor, present: torch.Tensor):
    """For every unit, the threshold t maximising the balanced accuracy of "peak > t" as a
    predictor of `present` (N,) bool. Returns (balanced accuracy (U,), threshold (U,)).

    Vectorised over units: sort each unit's peaks, count the images with the concept among the
    top k for every k, and place each threshold halfway between two distinct sorted values."""
    n = peaks.shape[0]
    pos = int(present.sum())
    neg = n - pos
    if pos == 0 or neg == 0:
        raise ValueError("balanced accuracy needs images with and without the concept")
    values, order = peaks.sort(0, descending=True)  # (N, U)
    hits = present[order].double().cumsum(0)  # images with the concept among the top k (k=1..N)
    k = torch.arange(1, n + 1, dtype=torch.float64)[:, None]
    acc = (hits / pos + 1 - (k - hits) / neg) / 2  # predicting "present" for the top k
    # a cut after position k must fall between two different values (ties go together)
    below = torch.cat([values[1:], torch.full_like(values[:1], float("-inf"))])
    acc = torch.where(values > below, acc, torch.full_like(acc, -1.0))
    best, at = acc.max(0)
    cut = torch.stack([values.gather(0, at[None])[0], below.gather(0, at[None])[0]])
    threshold = torch.where(torch.isinf(cut[1]), cut[0] - 1e-6, cut.mean(0))
    # predicting "absent" everywhere scores 0.5: a unit never beats that by cutting nowhere
    return best.clamp(min=0.5).float(), threshold.float()


def balanced_accuracy(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean of the true-positive and true-negative rates of bool predictions (N,) against the
    bool truth (N,): 0.5 for any constant guess, however rare the positives."""
    tpr = float(pred[truth].float().mean()) if truth.any() else float("nan")
    tnr = float((~pred[~truth]).float().mean()) if (~truth).any() else float("nan")
    return (tpr + tnr) / 2


def peak_detectors(source, layer: str, samples=1000, held_out=1000, batch_size=50,
                   min_share=MIN_SHARE, labels=None, progress=True, bins=30) -> dict:
    """Per concept: the best single-unit peak detector fitted on probe samples 0..samples-1 and
    its balanced accuracy on samples samples..samples+held_out-1. `labels`: optional
    {unit: label} (e.g. a dissection's) to say what the unit was found to detect."""
    fit_p, fit_y = peaks_and_presence(source, layer, range(samples), batch_size, min_share, progress)
    test_p, test_y = peaks_and_presence(source, layer, range(samples, samples + held_out),
                                        batch_size, min_share, progress)
    out = {"model": source.describe().get("model"), "layer": layer, "units": int(fit_p.shape[1]),
           "samples": samples, "held_out": held_out, "min_share": min_share,
           "concepts": {}, "skipped": {}}
    for c, name in enumerate(source.concepts):
        y, yt = fit_y[:, c], test_y[:, c]
        counts = [int(y.sum()), int((~y).sum()), int(yt.sum()), int((~yt).sum())]
        if min(counts) < MIN_IMAGES:
            out["skipped"][name] = (f"{counts[0]}/{counts[2]} images with it and {counts[1]}/"
                                    f"{counts[3]} without (fit/held out): fewer than {MIN_IMAGES}")
            continue
        acc, thr = best_thresholds(fit_p, y)
        u = int(acc.argmax())
        t = float(thr[u])
        with_it, without = test_p[yt, u].numpy(), test_p[~yt, u].numpy()
        edges = np.histogram_bin_edges(np.concatenate([with_it, without, [t]]), bins)
        row = {"unit": u, "threshold": round(t, 5),
               "balanced_accuracy_fit": round(float(acc[u]), 4),
               "balanced_accuracy": round(balanced_accuracy(test_p[:, u] > t, yt), 4),
               "presence": round(float(yt.float().mean()), 4),
               "runner_up": {"unit": int(acc.argsort(descending=True)[1]),
                             "balanced_accuracy_fit": round(float(acc.sort(descending=True)[0][1]), 4)},
               "histogram": {"edges": [round(float(e), 5) for e in edges],
                             "with": np.histogram(with_it, edges)[0].tolist(),
                             "without": np.histogram(without, edges)[0].tolist()}}
        if labels is not None and u in labels:
            row["unit_label"] = labels[u]
        out["concepts"][name] = row
    return out


def histogram_figure(result: dict, path: Path):
    """One panel per concept: the best unit's held-out peak activations for images with and
    without the concept, and the threshold (the figure of the reference's airliner unit)."""
    from ganpaint.apps.plots import _plt
    plt = _plt()
    rows = result["concepts"]
    n = max(1, len(rows))
    cols = min(4, n)
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(3.3 * cols, 2.5 * ((n + cols - 1) // cols)),
                             dpi=100, squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (name, r) in zip(axes.flat, rows.items()):
        h = r["histogram"]
        e = np.array(h["edges"])
        mid, w = (e[1:] + e[:-1]) / 2, np.diff(e)
        ax.bar(mid, h["without"], w, color="#bbbbbb", label="without")
        ax.bar(mid, h["with"], w, color="#d2552b", alpha=0.75, label="with")
        ax.axvline(r["threshold"], color="k", lw=1, ls="--")
        label = f" ({r['unit_label']})" if "unit_label" in r else ""
        ax.set_title(f"{name}: unit {r['unit']}{label}\nbalanced acc. {r['balanced_accuracy']:.3f}",
                     fontsize=9)
        ax.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{result['layer']}: peak activation over held-out images with / without the "
                 f"concept (dashed: threshold)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
