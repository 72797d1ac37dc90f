"""What a classifier's units mean: the seed experiments of Network Dissection and its sequels.

- `robustness`: dissect the probe set perturbed (noise, rotation, rearranged patches) and compare
  detectors with the unperturbed dissection.
- `axis_alignment`: dissect the layer in randomly rotated unit bases (several draws) — do
  interpretable directions line up with units? — and the PCA test on one concept.
- `unit_importance`: which units of the last conv layer a class depends on, and what removing
  the most important (or all the others) does to that class and to the whole classifier.
All sample choices are seeded, so results reproduce.
"""
from __future__ import annotations

import math
import zlib

import numpy as np
import torch
import torch.nn.functional as F

from ganpaint.core.dissect import DETECTOR_IOU, dissect
from ganpaint.apps.peak_detectors import balanced_accuracy
from ganpaint.world.probe import BLOCK, IMPORTANCE_BLOCK, ProbeSource

PERTURBATIONS = ["noise:1", "noise:5", "noise:10", "noise:100", "rotate:10", "rotate:45",
                 "rotate:90", "patches:4", "patches:8"]


def _rng(kind, index):
    """A generator seeded by the perturbation and the sample (the same in every process)."""
    return torch.Generator().manual_seed(zlib.crc32(f"{kind}/{int(index)}".encode()))


def rotate(x, y, degrees):
    """Rotate images (bilinear) and labels (nearest) together; multiples of 90° are exact."""
    if degrees % 90 == 0:
        k = int(degrees // 90) % 4
        return torch.rot90(x, k, (2, 3)), torch.rot90(y, k, (1, 2))
    t = math.radians(degrees)
    theta = torch.tensor([[math.cos(t), -math.sin(t), 0.0], [math.sin(t), math.cos(t), 0.0]])
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    xr = F.grid_sample(x, grid, "bilinear", "reflection", align_corners=False)
    yr = F.grid_sample(y[:, None].float(), grid, "nearest", "reflection", align_corners=False)
    return xr, yr[:, 0].long()


def rearrange(x, y, n, gens):
    """Cut each image into n×n patches and shuffle them (labels move with their pixels)."""
    s = x.shape[-1] // n
    out_x, out_y = x.clone(), y.clone()
    for i, g in enumerate(gens):
        perm = torch.randperm(n * n, generator=g)
        for dst, src in enumerate(perm.tolist()):
            dy, dx, sy, sx = dst // n * s, dst % n * s, src // n * s, src % n * s
            out_x[i, :, dy:dy + s, dx:dx + s] = x[i, :, sy:sy + s, sx:sx + s]
            out_y[i, dy:dy + s, dx:dx + s] = y[i, sy:sy + s, sx:sx + s]
    return out_x, out_y


def perturbation(spec: str):
    """`noise:k` (add k·Unif[0,1]), `rotate:deg`, `patches:n` → perturb(images, labels, indices)."""
    kind, _, arg = spec.partition(":")
    if kind not in ("noise", "rotate", "patches") or not arg:
        raise ValueError(f"unknown perturbation {spec!r}; valid: {', '.join(PERTURBATIONS)} "
                         f"(any number after the colon)")
    v = float(arg)

    def perturb(x, y, indices):
        gens = [_rng(spec, i) for i in indices]
        if kind == "noise":
            noise = torch.stack([torch.rand(x.shape[1:], generator=g) for g in gens])
            return x + v * noise, y
        if kind == "rotate":
            return rotate(x, y, v)
        return rearrange(x, y, int(v), gens)
    return perturb


def _dissect(source, layers, samples, quantile, batch_size):
    """(Dissection, {layer: IoU matrix (units, concepts)}) for a source, in memory."""
    res = dissect(source, layers, None, samples, quantile, batch_size, progress=False,
                  log=lambda *a: None)
    return res, {layer: res.results(layer)["iou"] for layer in layers}


def detectors(iou: np.ndarray) -> dict:
    """{unit: (best concept index, IoU)} for units whose best IoU reaches DETECTOR_IOU."""
    best = iou.argmax(1)
    return {int(u): (int(best[u]), float(iou[u, best[u]])) for u in range(len(iou))
            if iou[u, best[u]] >= DETECTOR_IOU}


def robustness(model, name, layers, perturbations=PERTURBATIONS, samples=500, quantile=0.005,
               batch_size=50, progress=True) -> dict:
    """Detectors per layer for each perturbation, and each original detector's IoU after it."""
    from tqdm import tqdm
    base, iou0 = _dissect(ProbeSource(model, name), layers, samples, quantile, batch_size)
    concepts = base["concepts"]

    def summary(iou):
        det = detectors(iou)
        return {"detectors": len(det), "unique": len({c for c, _ in det.values()})}

    rows = {}
    for spec in tqdm(list(perturbations), disable=not progress, desc="robustness"):
        _, iou1 = _dissect(ProbeSource(model, name, perturb=perturbation(spec)), layers, samples,
                           quantile, batch_size)
        rows[spec] = {}
        for layer in layers:
            kept = {str(u): {"concept": concepts[c], "before": round(v, 5),
                             "after": round(float(iou1[layer][u, c]), 5)}
                    for u, (c, v) in detectors(iou0[layer]).items()}
            rows[spec][layer] = {**summary(iou1[layer]), "original_detectors": kept}
    return {"model": name, "samples": samples, "quantile": quantile, "layers": list(layers),
            "unperturbed": {layer: summary(iou0[layer]) for layer in layers}, "perturbed": rows}


class RotatedSource:
    """A probe source whose `layer` activations are seen in a rotated basis: a' = Q·a."""

    def __init__(self, inner, layer, q: torch.Tensor):
        self.inner, self.layer, self.q = inner, layer, q

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _rot(self, acts):
        a = acts[self.layer]
        acts[self.layer] = torch.einsum("vu,nuhw->nvhw", self.q.to(a), a)
        return acts

    def activations(self, indices, layers, images=False):
        """The wrapped source's activations, with `layer` rotated (the others as they are)."""
        out = self.inner.activations(indices, layers, images)
        return (self._rot(out[0]), out[1]) if images else self._rot(out)

    def batch(self, indices, layers):
        """The wrapped source's batch, with `layer`'s activations rotated."""
        acts, y, x = self.inner.batch(indices, layers)
        return self._rot(acts), y, x


def random_rotation(n, seed):
    """A uniformly random orthogonal n×n matrix (QR of a Gaussian, signs fixed)."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))[None]).float()


def axis_alignment(model, name, layer, draws=3, samples=500, quantile=0.005, batch_size=50,
                   pca_concept=None, progress=True) -> dict:
    """Unique detectors in the unit basis vs random rotations of it, plus the PCA test."""
    from tqdm import tqdm
    src = ProbeSource(model, name)
    _, iou = _dissect(src, [layer], samples, quantile, batch_size)
    det = detectors(iou[layer])
    base = {"detectors": len(det), "unique": len({c for c, _ in det.values()})}
    rotated = []
    units = iou[layer].shape[0]
    for d in tqdm(range(draws), disable=not progress, desc="rotations"):
        _, ir = _dissect(RotatedSource(src, layer, random_rotation(units, 1000 + d)), [layer],
                         samples, quantile, batch_size)
        dr = detectors(ir[layer])
        rotated.append({"detectors": len(dr), "unique": len({c for c, _ in dr.values()})})
    out = {"model": name, "layer": layer, "samples": samples, "quantile": quantile,
           "unit_basis": base, "rotated": rotated,
           "rotated_unique_mean": float(np.mean([r["unique"] for r in rotated])),
           "rotated_unique_std": float(np.std([r["unique"] for r in rotated])),
           "rotated_detectors_mean": float(np.mean([r["detectors"] for r in rotated])),
           "rotated_detectors_std": float(np.std([r["detectors"] for r in rotated]))}
    if pca_concept is not None:
        out["pca"] = pca_test(src, layer, pca_concept, min(samples, 200), batch_size)
    return out


def pca_test(src, layer, concept, samples=200, batch_size=50) -> dict:
    """Standardise the layer's activations, keep the pixels of `concept`, take the first principal
    axis: how much of it sits on single units?"""
    from ganpaint.world.labels import lookup
    c = lookup(concept, src.concepts)
    rows, all_mean, all_sq, count = [], 0, 0, 0
    for i in range(0, samples, batch_size):
        acts, y, _ = src.batch(list(range(i, min(samples, i + batch_size))), [layer])
        a = F.interpolate(acts[layer].float(), size=y.shape[-2:], mode="bilinear", align_corners=False)
        flat = a.permute(0, 2, 3, 1).reshape(-1, a.shape[1]).double()
        all_mean, all_sq, count = all_mean + flat.sum(0), all_sq + (flat ** 2).sum(0), count + len(flat)
        rows.append(flat[(y == c).reshape(-1)])
    mean = all_mean / count
    std = (all_sq / count - mean ** 2).clamp(min=1e-12).sqrt()
    x = (torch.cat(rows) - mean) / std
    if len(x) < 2:
        return {"concept": src.concepts[c], "pixels": int(len(x))}
    x = x - x.mean(0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    load = v[0] ** 2  # squared loadings of the first axis sum to 1
    order = load.sort(descending=True).values
    half = int((order.cumsum(0) < 0.5).sum()) + 1
    return {"concept": src.concepts[c], "pixels": int(len(x)), "units": int(len(load)),
            "largest_abs_loading": float(v[0].abs().max()), "top_unit": int(v[0].abs().argmax()),
            "units_for_half_the_mass": half}


def _suffix(model, layer):
    """fn(features) → logits running only the layers after `layer` (sequential models), or None."""
    children = list(model.named_children()) if isinstance(model, torch.nn.Sequential) else []
    names = [n for n, _ in children]
    if layer not in names:
        return None
    rest = [m for _, m in children[names.index(layer) + 1:]]

    def run(x):
        for m in rest:
            x = m(x)
        return x
    return run


@torch.no_grad()
def unit_importance(model, name, layer="conv5", samples=600, classes=None, batch_size=100,
                    iou=None, progress=True) -> dict:
    """Rank units by how much zeroing each lowers a class's balanced accuracy; then remove the
    top 4, the top 20, or all but the top 20 and report the class's balanced accuracy and the
    all-class accuracy (chance: 0.5 and 1/classes)."""
    from tqdm import tqdm

    from ganpaint.world.classifier import CATEGORIES, PROBE_SEED, category
    from ganpaint.core.hooks import Trace
    src = ProbeSource(model, name, start=PROBE_SEED + IMPORTANCE_BLOCK * BLOCK)  # images of its own
    feats, ys = [], []
    for i in range(0, samples, batch_size):
        x, lab = src.probe(range(i, min(samples, i + batch_size)))
        with Trace(model, [layer], stop=True) as tr:
            model(x)
        feats.append(tr[layer])
        ys.append(torch.tensor([category(l.numpy()) for l in lab]))
    feats, y = torch.cat(feats), torch.cat(ys)
    suffix = _suffix(model, layer)
    if suffix is None:
        raise ValueError(f"unit importance needs a sequential model with {layer!r} a top-level layer")

    def predict(zero=()):
        f = feats
        if len(zero):
            f = feats.clone()
            f[:, list(zero)] = 0
        return torch.cat([suffix(f[i:i + batch_size]).argmax(1) for i in range(0, len(f), batch_size)])

    units = feats.shape[1]
    base = predict()
    per_unit = [predict([u]) for u in tqdm(range(units), disable=not progress, desc="zero each unit")]
    n_classes = len(CATEGORIES)
    classes = range(n_classes) if classes is None else classes
    overall = lambda p: float((p == y).float().mean())  # noqa: E731

    def removed(units_off, k):
        p = predict(units_off)
        return {"balanced": balanced_accuracy(p == k, y == k), "overall": overall(p)}
    out = {"model": name, "layer": layer, "samples": samples, "units": units,
           "chance": {"balanced": 0.5, "overall": 1 / n_classes},
           "overall_accuracy": overall(base), "classes": {}}
    best_iou = iou.max(1) if iou is not None else None
    mean_act = feats.float().mean((2, 3))  # (N, U): each unit's mean activation per image
    drops = []
    for k in classes:
        b0 = balanced_accuracy(base == k, y == k)
        drop = np.array([b0 - balanced_accuracy(p == k, y == k) for p in per_unit])
        drops.append(drop)
        order = np.argsort(-drop, kind="stable")
        top4, top20 = order[:4].tolist(), order[:20].tolist()
        rest, half = order[20:].tolist(), units // 2
        corr = _correlation(mean_act, (y == k).float())  # (U,) unit-class correlation
        row = {"positives": int((y == k).sum()), "balanced_accuracy": b0,
               "important_units": top20,
               "remove_top4": removed(top4, k), "remove_top20": removed(top20, k),
               "remove_all_but_top20": removed(rest, k),
               # the reference's comparison: the more important half of the units vs the less
               "remove_best_half": removed(order[:half].tolist(), k),
               "remove_worst_half": removed(order[half:].tolist(), k),
               "correlation_top4": float(corr[top4].mean()),
               "correlation_rest": float(np.delete(corr, top4).mean()),
               "correlation": [round(float(v), 4) for v in corr]}
        if best_iou is not None:
            row["mean_iou_important"] = float(best_iou[top20].mean())
            # None, not NaN (not valid JSON), for a layer of 20 units or fewer
            row["mean_iou_others"] = float(best_iou[rest].mean()) if len(rest) else None
        out["classes"][CATEGORIES[k]] = row
    importance = np.mean(drops, 0)  # mean over classes of each unit's accuracy drop
    out["mean_importance"] = [round(float(v), 5) for v in importance]
    if best_iou is not None:
        out["best_iou"] = [round(float(v), 5) for v in best_iou]
        # None when either side is constant (e.g. no single unit changes any answer)
        varies = np.std(best_iou) > 0 and np.std(importance) > 0
        out["iou_importance_correlation"] = (float(np.corrcoef(best_iou, importance)[0, 1])
                                             if varies else None)
    return out


def _correlation(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Pearson correlation of each column of a (N, U) with b (N,); 0 for a constant column."""
    a = a - a.mean(0)
    b = b - b.mean()
    den = (a.pow(2).sum(0) * b.pow(2).sum()).sqrt()
    return torch.where(den > 0, (a * b[:, None]).sum(0) / den.clamp(min=1e-12),
                       torch.zeros_like(den)).numpy()


def importance_figure(result: dict, path):
    """The importance views of the reference: interpretability (best IoU) against mean class
    importance, one point per unit; and per class the unit-class correlation of its 4 most
    important units against the others'."""
    from ganpaint.apps.plots import _plt
    plt = _plt()
    panels = 2 if "best_iou" in result else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.6), dpi=100, squeeze=False)
    ax = axes[0, 0]
    names = list(result["classes"])
    xs = np.arange(len(names))
    ax.bar(xs - 0.2, [result["classes"][c]["correlation_top4"] for c in names], 0.4,
           label="4 most important units")
    ax.bar(xs + 0.2, [result["classes"][c]["correlation_rest"] for c in names], 0.4,
           color="gray", label="the other units")
    ax.set_xticks(xs)
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("mean correlation with the class")
    ax.set_title(f"{result['layer']}: unit–class correlation", fontsize=10)
    ax.legend(fontsize=7)
    if panels == 2:
        ax = axes[0, 1]
        ax.scatter(result["best_iou"], result["mean_importance"], s=8, alpha=0.6)
        ax.set_xlabel("interpretability: best IoU with a concept")
        ax.set_ylabel("mean accuracy drop when zeroed")
        r = result["iou_importance_correlation"]
        ax.set_title("interpretability vs importance" + (f" (r = {r:.2f})" if r is not None else ""),
                     fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
