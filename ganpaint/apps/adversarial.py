"""Adversarial attacks seen through units (Network Dissection, part two).

An imperceptible perturbation changes a classifier's answer by moving a few units: in the
reference, an attack from "ski resort" to "bedroom" raises the peaks of two "bed" units and a
"head" unit, the top units important to the two classes. Here: a projected-gradient (PGD,
L∞) attack on held-out probe images at a few ε; per successful image, the units whose peak
activation moved most, and how many of them are among the top-important units (by
`unit_importance`) of the true class and of the class the attack reached. The defence the
reference proposes: deactivate some top-important units at inference. We measure accuracy on
clean and attacked images with k units zeroed, drawn at random (`draws` times) from the pool of
every class's top-important units, against k drawn from all the layer's units.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ganpaint.core.hooks import Trace

EPSILONS = (0.002, 0.005, 0.01)  # L∞ bound, as a share of the pixel range (0.01 ≈ 2.5 of 255)
DEFENCE_K = (0, 5, 10, 20)
TOP_CHANGED = 10  # units per image counted as "moved most"


def pgd(model, x, y, eps: float, steps: int = 10, step: float | None = None) -> torch.Tensor:
    """Untargeted L∞ PGD on images x in [-1, 1]: `eps` is a share of the pixel range (so
    2·eps in model units). Starts at x (no random start: deterministic), steps of 2.5·eps/steps."""
    bound = 2.0 * eps
    step = 2.5 * bound / steps if step is None else step
    adv = x.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(adv), y)
        (grad,) = torch.autograd.grad(loss, adv)
        with torch.no_grad():
            adv = adv + step * grad.sign()
            adv = (x + (adv - x).clamp(-bound, bound)).clamp(-1, 1)
    return adv.detach()


@torch.no_grad()
def peaks(model, layer: str, x, zero=()) -> tuple[torch.Tensor, torch.Tensor]:
    """(each unit's peak activation at `layer` (N, U), logits (N, classes)), with the units in
    `zero` deactivated (set to 0) at that layer."""
    zero = list(zero)

    def off(a):
        if not zero:
            return a
        a = a.clone()
        a[:, zero] = 0
        return a
    with Trace(model, [layer], edit={layer: off}) as tr:
        logits = model(x)
    return tr[layer].amax((2, 3)), logits


def _accuracy(model, layer, x, y, zero=()) -> float:
    return float((peaks(model, layer, x, zero)[1].argmax(1) == y).float().mean())


def attack(model, layer: str, x, y, important: dict, eps_list=EPSILONS, steps: int = 10,
           defence_k=DEFENCE_K, draws: int = 5, labels: dict | None = None, seed: int = 0,
           class_names=None, progress=True) -> dict:
    """The attack report for images x (N, 3, S, S) with classes y (N,). `important`: {class
    index: [unit, ...]} (its top-important units, most important first); `labels`: optional
    {unit: what it detects}. The defence is measured against the attack at the largest ε: k
    units drawn `draws` times from the pool of all classes' important units, against k drawn
    from all units (mean accuracies)."""
    from tqdm import tqdm
    model.eval()
    names = class_names or {}
    clean_peaks, clean_logits = peaks(model, layer, x)
    correct = clean_logits.argmax(1) == y
    units = clean_peaks.shape[1]
    pool = sorted({u for us in important.values() for u in us})
    out = {"layer": layer, "images": int(len(y)), "units": units, "steps": steps,
           "clean_accuracy": float(correct.float().mean()),
           "important_per_class": len(next(iter(important.values()), [])),
           "chance_overlap": len(next(iter(important.values()), [])) / units, "eps": {}}
    adv_last = None
    for eps in tqdm(eps_list, disable=not progress, desc="attack", unit="ε"):
        adv = pgd(model, x, y, eps, steps)
        adv_peaks, adv_logits = peaks(model, layer, adv)
        pred = adv_logits.argmax(1)
        hit = correct & (pred != y)  # correctly classified before, wrong after
        change = adv_peaks - clean_peaks
        rows, over_src, over_tgt = [], [], []
        for i in torch.nonzero(hit)[:, 0].tolist():
            top = change[i].abs().argsort(descending=True)[:TOP_CHANGED].tolist()
            src, tgt = int(y[i]), int(pred[i])
            over_src.append(len(set(top) & set(important.get(src, []))) / TOP_CHANGED)
            over_tgt.append(len(set(top) & set(important.get(tgt, []))) / TOP_CHANGED)
            rows.append((src, tgt))
        mean_change = change[hit].mean(0) if hit.any() else torch.zeros(units)
        order = mean_change.abs().argsort(descending=True)[:TOP_CHANGED].tolist()
        pairs = {}
        for s, t in rows:
            key = f"{names.get(s, s)} → {names.get(t, t)}"
            pairs[key] = pairs.get(key, 0) + 1
        out["eps"][str(eps)] = {
            "attacked_accuracy": float((pred == y).float().mean()),
            "success": float(hit.sum() / correct.sum().clamp(min=1)),
            "linf": float((adv - x).abs().max() / 2),
            "mean_abs_peak_change": float(change.abs().mean()),
            "top_changed_units": [
                {"unit": u, "mean_change": round(float(mean_change[u]), 4),
                 **({"label": labels[u]} if labels and u in labels else {}),
                 "important_to": [names.get(c, c) for c, us in important.items() if u in us]}
                for u in order],
            "overlap_source": float(np.mean(over_src)) if over_src else 0.0,
            "overlap_target": float(np.mean(over_tgt)) if over_tgt else 0.0,
            "pairs": dict(sorted(pairs.items(), key=lambda kv: -kv[1])[:8])}
        adv_last = adv
    gen = torch.Generator().manual_seed(seed)
    defence = {}
    for k in defence_k:
        row = {}
        for kind, choices in (("important", pool), ("random", list(range(units)))):
            k_ = min(k, len(choices))
            clean, attacked = [], []
            for _ in range(draws if k_ else 1):
                pick = [choices[j] for j in torch.randperm(len(choices), generator=gen)[:k_].tolist()]
                clean.append(_accuracy(model, layer, x, y, pick))
                attacked.append(_accuracy(model, layer, adv_last, y, pick))
            row[kind] = {"clean": float(np.mean(clean)), "attacked": float(np.mean(attacked))}
        defence[str(k)] = row
    out["defence"] = {"eps": max(eps_list), "draws": draws, "pool": len(pool), "k": defence}
    return out


def attack_figure(result: dict, path):
    """Left: accuracy vs ε, and the overlap of the most-moved units with the source's and the
    target's important units (chance: dashed). Right: the defence, accuracy on clean and
    attacked images with k important vs k random units deactivated."""
    from ganpaint.apps.plots import _plt
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    eps = sorted(result["eps"], key=float)
    xs = [float(e) for e in eps]
    a.plot(xs, [result["eps"][e]["attacked_accuracy"] for e in eps], "o-", label="accuracy (attacked)")
    a.plot(xs, [result["eps"][e]["overlap_source"] for e in eps], "s-", label="moved ∩ important to true class")
    a.plot(xs, [result["eps"][e]["overlap_target"] for e in eps], "^-", label="moved ∩ important to reached class")
    a.axhline(result["chance_overlap"], color="gray", ls="--", lw=1, label="overlap by chance")
    a.axhline(result["clean_accuracy"], color="C0", ls=":", lw=1, label="accuracy (clean)")
    a.set_xlabel("ε (share of the pixel range)")
    a.set_ylim(0, 1.02)
    a.set_title(f"{result['layer']}: PGD attack and the units it moves", fontsize=10)
    a.legend(fontsize=7)
    d = result["defence"]
    ks = sorted(d["k"], key=int)
    kx = [int(k) for k in ks]
    for kind, style in (("important", "-"), ("random", "--")):
        b.plot(kx, [d["k"][k][kind]["clean"] for k in ks], "o" + style, color="C0",
               label=f"clean, k {kind} units off")
        b.plot(kx, [d["k"][k][kind]["attacked"] for k in ks], "s" + style, color="C3",
               label=f"attacked (ε {d['eps']}), k {kind} units off")
    b.set_xlabel("k units deactivated")
    b.set_ylabel("accuracy")
    b.set_ylim(0, 1.02)
    b.set_title("defence: deactivate k units drawn from the important ones", fontsize=10)
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
