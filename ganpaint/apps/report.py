"""The dissection report: a static report.html (opens offline) plus the pictures it shows.

Everything is generated from dissection.json and the source (top samples are regenerated from
their indices, which are deterministic): per layer a bar chart of detectors per concept, and per
unit a strip of its top-activating images with the thresholded region outlined.
"""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np
from PIL import Image

from ganpaint.core.dissect import DETECTOR_IOU
from ganpaint.core.upsample import upsampled

STRIP = 5  # images per unit strip
THUMB = 96  # pixels per image in a strip


def overlay(image: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Dim outside the region and outline it: (H, W, 3) uint8 and (H, W) bool → uint8."""
    out = image.astype(np.float32)
    out[~region] *= 0.35
    edge = region & ~(np.roll(region, 1, 0) & np.roll(region, -1, 0) & np.roll(region, 1, 1)
                      & np.roll(region, -1, 1))
    out[edge] = (255, 230, 0)
    return out.astype(np.uint8)


def _resize(img, size, nearest=False):
    return np.asarray(Image.fromarray(img).resize((size, size), Image.NEAREST if nearest else Image.BICUBIC))


def unit_strips(result: dict, source, layer: str, units=None, n=STRIP, thumb=THUMB,
                batch_size=32):
    """{unit: strip image (thumb, n·thumb, 3)} of each unit's top samples, region outlined."""
    from ganpaint.world.scenes import to_uint8_images
    lay = result["layers"][layer]
    stats = lay["unit_stats"]
    units = range(lay["units"]) if units is None else units
    wanted = sorted({i for u in units for i in stats[u]["top_samples"][:n]})
    imgs, acts = {}, {}
    for k in range(0, len(wanted), batch_size):
        idx = wanted[k:k + batch_size]
        a, im = source.activations(idx, [layer], images=True)
        for j, i in enumerate(idx):
            imgs[i] = im[j:j + 1]
            acts[i] = a[layer][j:j + 1]
    strips = {}
    for u in units:
        tiles = []
        for i in stats[u]["top_samples"][:n]:
            big = upsampled(acts[i][:, u:u + 1], thumb)[0, 0].cpu().numpy()
            img = _resize(to_uint8_images(imgs[i])[0], thumb)
            tiles.append(overlay(img, big > stats[u]["level"]))
        tiles += [np.zeros((thumb, thumb, 3), np.uint8)] * (n - len(tiles))
        strips[u] = np.concatenate(tiles, 1)
    return strips


def level_sentence(result: dict) -> str:
    """How the levels (and so the masks and IoUs) of a dissection are defined."""
    q = result["quantile"]
    if result.get("level_from", "upsampled") == "raw":
        text = (f"Levels from the raw activations (the published method): each unit's level is the "
                f"top-{q} quantile of its raw activations at the feature map's resolution, over all "
                f"samples and positions; its activation map, upsampled bilinearly to the label "
                f"resolution, is thresholded at that level, so a mask covers about, not exactly, "
                f"{q * 100:g} % of the pixels.")
    else:
        text = (f"Levels from the upsampled activations: each unit's level is the top-{q} quantile "
                f"of its bilinearly upsampled activation map, so each mask covers exactly "
                f"{q * 100:g} % of the pixels (not the published method's raw-activation levels).")
    text += (" IoU = |mask ∧ concept| / |mask ∨ concept|, summed over all samples' pixels.")
    if result.get("ignored_labels"):
        text += (f" Ignored labels (no concept; their pixels still count in the masks): "
                 f"{', '.join(result['ignored_labels'])}.")
    return text


def detector_chart(lay: dict, path: Path, title: str):
    """The layer's detectors per concept as a bar chart PNG."""
    from ganpaint.apps.plots import bar_chart
    bar_chart(lay["detectors"], path, title, f"units (IoU ≥ {DETECTOR_IOU})")


def make_report(out_dir, result: dict, source, log=print):
    """report.html (and its PNGs) beside a dissection: per layer the detector chart and
    every unit's top samples with the region above its level outlined."""
    out_dir = Path(out_dir)
    parts = [f"<!doctype html><meta charset='utf-8'><title>Dissection of {html.escape(str(result['model']))}</title>",
             "<style>body{font-family:sans-serif;margin:2em;background:#fafafa}"
             "table{border-collapse:collapse}td,th{padding:4px 8px;border-bottom:1px solid #ddd;text-align:left}"
             "img.strip{height:72px;image-rendering:pixelated}</style>",
             f"<h1>Dissection of <code>{html.escape(str(result['model']))}</code></h1>",
             f"<p>{result['samples']} samples, seed {result['seed']}, top quantile q = {result['quantile']}, "
             f"segmenter <code>{html.escape(str(result['segmenter']))}</code>"
             + (f", model arguments <code>{html.escape(', '.join(f'{k}={v}' for k, v in result['model_args'].items()))}</code>"
                if result.get("model_args") else "")
             + f". A unit is a detector of its best concept when IoU ≥ {DETECTOR_IOU}.</p>",
             f"<p id='definition'>{html.escape(level_sentence(result))}</p>"]
    for layer, lay in result["layers"].items():
        d = out_dir / "images" / layer
        d.mkdir(parents=True, exist_ok=True)
        detector_chart(lay, d / "detectors.png", f"{layer}: detectors per concept")
        log(f"report: drawing top images for {lay['units']} units of {layer}")
        strips = unit_strips(result, source, layer)
        for u, strip in strips.items():
            Image.fromarray(strip).save(d / f"unit_{u:04d}.png")
        cov = lay.get("coverage")
        cover = (f" Masks cover {cov['min'] * 100:.2f}–{cov['max'] * 100:.2f} % of the pixels "
                 f"(mean {cov['mean'] * 100:.2f} %)." if cov else "")
        parts.append(f"<h2>{html.escape(layer)}</h2><p>{lay['units']} units; "
                     f"{sum(lay['detectors'].values())} detectors of {len(lay['detectors'])} concepts.{cover}</p>"
                     f"<img src='images/{layer}/detectors.png'>")
        parts.append("<table><tr><th>unit</th><th>concept</th><th>IoU</th><th>level</th>"
                     "<th>top-activating samples (region above level outlined)</th></tr>")
        units = sorted(lay["unit_stats"], key=lambda s: (-s["iou"] if s["iou"] >= DETECTOR_IOU else 1, s["unit"]))
        for s in units:
            parts.append(f"<tr><td>{s['unit']}</td><td>{html.escape(s['label'])}</td><td>{s['iou']:.3f}</td>"
                         f"<td>{s['level']:.3g}</td><td><img class='strip' loading='lazy' "
                         f"src='images/{layer}/unit_{s['unit']:04d}.png'></td></tr>")
        parts.append("</table>")
    (out_dir / "report.html").write_text("\n".join(parts))
    log(f"report: {out_dir / 'report.html'}")
