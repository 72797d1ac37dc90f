"""Rankings read from a dissection: units by concept, concepts by detector count."""
from __future__ import annotations

from .labels import lookup, unknown


def layer_of(dissection: dict, layer: str | None) -> str:
    layers = list(dissection["layers"])
    if layer is None:
        return layers[0]
    if layer not in layers:
        raise unknown("dissected layer", layer, layers)
    return layer


def rank_units(dissection: dict, concept: str, layer: str | None = None, top: int = 20) -> list[dict]:
    """[{rank, unit, iou, level}] of the `top` units of `layer` for `concept`, best first."""
    layer = layer_of(dissection, layer)
    name = dissection["concepts"][lookup(concept, dissection["concepts"])]
    lay = dissection["layers"][layer]
    rows = lay["ranking"].get(name, [])[:top]
    return [{"rank": i + 1, "unit": r["unit"], "iou": r["iou"],
             "level": lay["unit_stats"][r["unit"]]["level"]} for i, r in enumerate(rows)]


def top_units(dissection: dict, concept: str, layer: str | None = None, n: int = 20) -> list[int]:
    return [r["unit"] for r in rank_units(dissection, concept, layer, n)]


def concept_table(dissection: dict, layer: str | None = None) -> list[dict]:
    """Per concept: number of detector units, best IoU and its unit; most detected first."""
    layer = layer_of(dissection, layer)
    lay = dissection["layers"][layer]
    rows = []
    for c in dissection["concepts"]:
        r = lay["ranking"].get(c, [])
        rows.append({"concept": c, "detectors": lay["detectors"].get(c, 0),
                     "best_iou": r[0]["iou"] if r else 0.0, "best_unit": r[0]["unit"] if r else -1})
    return sorted(rows, key=lambda r: (-r["detectors"], -r["best_iou"]))
