"""Shape vs texture: dissect a classifier on its probe images and on stylized copies of them.

Stylized copies keep every shape and label but draw each object class in another colour and
texture. A unit that detects a concept by its shape keeps its IoU with it; a unit that detects
it by colour or texture loses it (the reference: conv5_3 unit 437 "horse" keeps IoU 0.147,
unit 268 "grass" falls to 0.008). Each dissection reads its own levels, as the reference does.
"""
from __future__ import annotations

import numpy as np

from ganpaint.core.dissect import DETECTOR_IOU, dissect

KEEPS = 0.5  # shape-sensitive: the stylized IoU keeps at least half of the original
COLLAPSES = 0.2  # texture-sensitive: it falls below a fifth


def shape_vs_texture(original, stylized, layer: str, samples=500, quantile=None,
                     batch_size=50, progress=True) -> tuple[dict, object]:
    """(result, the original's Dissection) for two sources over the same label maps: per unit,
    its best concept on the originals, that concept's IoU on both, and which detectors are
    shape-sensitive (IoU kept) or texture-sensitive (IoU collapsed)."""
    kw = dict(samples=samples, quantile=quantile, batch_size=batch_size, progress=progress,
              log=lambda *a: None)
    d0 = dissect(original, [layer], None, **kw)
    d1 = dissect(stylized, [layer], None, **kw)
    iou0, iou1 = d0.results(layer)["iou"], d1.results(layer)["iou"]
    best = iou0.argmax(1)
    rows = []
    for u, c in enumerate(best):
        a, b = float(iou0[u, c]), float(iou1[u, c])
        rows.append({"unit": u, "concept": d0.concepts[c], "iou": round(a, 5),
                     "iou_stylized": round(b, 5), "ratio": round(b / a, 4) if a > 0 else 0.0})
    detectors = [r for r in rows if r["iou"] >= DETECTOR_IOU]
    by_iou = lambda rs: sorted(rs, key=lambda r: -r["iou"])  # noqa: E731
    shape = by_iou([r for r in detectors if r["ratio"] >= KEEPS])
    texture = by_iou([r for r in detectors if r["ratio"] < COLLAPSES])
    out = {"layer": layer, "samples": samples, "quantile": d0.quantile,
           "detector_iou": DETECTOR_IOU, "keeps": KEEPS, "collapses": COLLAPSES,
           "original": original.describe(), "stylized": stylized.describe(),
           "detectors": len(detectors), "detectors_stylized": int(
               (iou1.max(1) >= DETECTOR_IOU).sum()),
           "shape_sensitive": shape, "texture_sensitive": texture,
           "mean_ratio_detectors": float(np.mean([r["ratio"] for r in detectors])) if detectors else None,
           "units": rows}
    return out, d0


def scatter_figure(result: dict, path):
    """Each unit's IoU with its best concept on the originals (x) and on the stylized copies
    (y); detectors coloured by verdict, the keep/collapse lines dashed."""
    from ganpaint.apps.plots import _plt
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4.2), dpi=100)
    shape = {r["unit"] for r in result["shape_sensitive"]}
    texture = {r["unit"] for r in result["texture_sensitive"]}
    groups = {"shape-sensitive (IoU kept)": ("C0", shape), "texture-sensitive (IoU collapsed)": ("C3", texture)}
    rest = [r for r in result["units"] if r["unit"] not in shape | texture]
    ax.scatter([r["iou"] for r in rest], [r["iou_stylized"] for r in rest], s=8, color="gray",
               alpha=0.5, label="other units")
    for label, (color, units) in groups.items():
        rs = [r for r in result["units"] if r["unit"] in units]
        ax.scatter([r["iou"] for r in rs], [r["iou_stylized"] for r in rs], s=14, color=color,
                   label=f"{label}: {len(rs)}")
    top = max([r["iou"] for r in result["units"]] + [r["iou_stylized"] for r in result["units"]] + [0.05])
    xs = np.linspace(0, top, 10)
    ax.plot(xs, xs, color="k", lw=0.6)
    ax.plot(xs, KEEPS * xs, "--", color="C0", lw=0.8)
    ax.plot(xs, COLLAPSES * xs, "--", color="C3", lw=0.8)
    ax.axvline(result["detector_iou"], color="gray", ls=":", lw=0.8)
    ax.set_xlabel("IoU with the unit's best concept, original probe images")
    ax.set_ylabel("same concept, stylized copies")
    ax.set_title(f"{result['layer']}: shape vs texture", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def thumbnails(result: dict, dissection, source, path, n_units=4, n=4):
    """A picture of the top shape- and texture-sensitive units: each a row of its top probe
    images with the region above its level outlined, labelled with both IoUs."""
    from PIL import Image, ImageDraw

    from ganpaint.apps.report import unit_strips
    picks = [("shape", r) for r in result["shape_sensitive"][:n_units]] + \
            [("texture", r) for r in result["texture_sensitive"][:n_units]]
    if not picks:
        return None
    strips = unit_strips(dissection, source, result["layer"], [r["unit"] for _, r in picks], n=n)
    rows = []
    for kind, r in picks:
        strip = strips[r["unit"]]
        band = Image.new("RGB", (strip.shape[1], 16), (255, 255, 255))
        ImageDraw.Draw(band).text((3, 2), f"{kind}: unit {r['unit']} {r['concept']} IoU "
                                          f"{r['iou']:.3f} -> {r['iou_stylized']:.3f}", fill=(0, 0, 0))
        rows += [np.asarray(band), strip]
    Image.fromarray(np.concatenate(rows, 0)).save(path)
    return path
