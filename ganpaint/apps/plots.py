"""Figures people look at: detector counts, ablation curves, insertion-by-context bars."""
from __future__ import annotations

from pathlib import Path


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def bar_chart(values: dict, path: Path, title: str, ylabel: str, color="#4a7ab5"):
    """A (vertical) bar chart PNG of {label: value} (detector counts, shares), for reports."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4, 0.55 * len(values) + 2), 3.2), dpi=100)
    ax.bar(list(values), list(values.values()), color=color)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


RANKING_NAMES = {"iou": "by IoU", "causal": "causal ranking", "local": "local causal ranking"}


def ablation_curve(result: dict, path: Path):
    """Portion of the concept's pixels removed vs number of units ablated, ranked vs random."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=100)
    ax.plot(result["k"], result["removed"], "o-", label=f"top-k {result['concept']} units "
            f"({RANKING_NAMES.get(result.get('ranking'), 'by IoU')})")
    draws = result.get("random_draws", [])
    for d in draws:
        ax.plot(result["k"], d, "-", color="gray", lw=0.6, alpha=0.5)
    ax.plot(result["k"], result["random_removed"], "s--", color="gray",
            label=f"k random units (mean of {len(draws)} draws, thin: each)" if draws else "k random units")
    ax.set_xlabel("units ablated (k)")
    ax.set_ylabel(f"portion of {result['concept']} pixels removed")
    where = "where the concept is (local)" if result.get("local") else "everywhere"
    ax.set_title(f"{result['layer']}: ablating {where}\n{result['samples']} samples", fontsize=10)
    low = min(result["removed"] + result["random_removed"] + [v for d in draws for v in d])
    ax.set_ylim(min(-0.1, low - 0.05), 1.0)
    ax.axhline(0, color="black", lw=0.5)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def grouped_bars(groups: dict, path: Path, title: str, ylabel: str, errors: dict | None = None,
                 hline: float | None = None):
    """Bars grouped by the outer keys, one colour per inner key: {group: {series: value}}."""
    import numpy as np
    plt = _plt()
    series = list(dict.fromkeys(k for g in groups.values() for k in g))
    x = np.arange(len(groups))
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(groups) * max(1, len(series)) ** 0.5 + 2), 3.6), dpi=100)
    for i, s in enumerate(series):
        vals = [g.get(s, 0) for g in groups.values()]
        err = [errors.get(gk, {}).get(s, 0) for gk in groups] if errors else None
        ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, yerr=err, label=s, capsize=3)
    if hline is not None:
        ax.axhline(hline, color="black", lw=0.8, ls="--", label="chance")
    ax.set_xticks(x, list(groups), rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")  # keeps a long title and the outside legend
    plt.close(fig)


def stacked_bars(groups: dict, path: Path, title: str, ylabel: str):
    """One stacked bar per group ({group: {part: value}}, e.g. {layer: {category: count}}),
    parts in a fixed order and colour: Network Dissection's detectors-per-category chart."""
    plt = _plt()
    parts = list(dict.fromkeys(k for row in groups.values() for k in row))
    fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(groups) + 2.5), 3.6), dpi=100)
    bottom = [0.0] * len(groups)
    for i, part in enumerate(parts):
        vals = [float(row.get(part, 0)) for row in groups.values()]
        ax.bar(list(groups), vals, bottom=bottom, label=part, color=f"C{i}")
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
