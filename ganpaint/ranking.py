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


RANKINGS = ("iou", "causal", "local")  # by IoU, or by learned causal effect, everywhere or
# where the concept is (see causal.py)
LEARNED = {"causal": "causal", "local": "causal_local"}  # ranking → its key in a dissected layer


def rank_units(dissection: dict, concept: str, layer: str | None = None, top: int = 20,
               by: str = "iou") -> list[dict]:
    """[{rank, unit, iou, level, alpha?}] of the `top` units of `layer` for `concept`, best first.

    by="iou": IoU with the concept; "causal" / "local": a learned causal ranking
    (`ganpaint rank-causal`, with `--local` for the second)."""
    layer = layer_of(dissection, layer)
    name = dissection["concepts"][lookup(concept, dissection["concepts"])]
    lay = dissection["layers"][layer]
    stats = lay["unit_stats"]
    if int(top) < 0:  # a negative slice would drop the best units instead
        raise ValueError(f"top must be at least 0 (units to list), got {top}")
    if by == "iou":
        rows = lay["ranking"].get(name, [])[:top]
    elif by in LEARNED:
        learned = lay.get(LEARNED[by], {})
        if name not in learned:
            raise ValueError(f"no {by} ranking for {name!r} in layer {layer} (have: "
                           f"{', '.join(sorted(learned)) or 'none'}); run `ganpaint rank-causal "
                           f"--concepts {name}{' --local' if by == 'local' else ''}`")
        rows = learned[name]["ranking"][:top]
    else:
        raise unknown("ranking", by, RANKINGS)
    iou = {r["unit"]: r["iou"] for r in lay["ranking"].get(name, [])}
    return [{"rank": i + 1, "unit": r["unit"], "iou": iou.get(r["unit"], 0.0),
             "level": stats[r["unit"]]["level"], **({"alpha": r["alpha"]} if "alpha" in r else {})}
            for i, r in enumerate(rows)]


def best_ranking(dissection: dict, concept: str, layer: str | None = None,
                 local: bool = False) -> str:
    """The learned ranking for how the units will be used when there is one — "local" for edits
    inside a region (painting), "causal" for edits everywhere, either as a fallback — else "iou"."""
    lay = dissection["layers"][layer_of(dissection, layer)]
    name = dissection["concepts"][lookup(concept, dissection["concepts"])]
    for by in (("local", "causal") if local else ("causal", "local")):
        if name in lay.get(LEARNED[by], {}):
            return by
    return "iou"


def top_units(dissection: dict, concept: str, layer: str | None = None, n: int = 20,
              by: str = "iou") -> list[int]:
    return [r["unit"] for r in rank_units(dissection, concept, layer, n, by)]


def definition(dissection: dict, layer: str | None = None) -> str:
    """One line saying how the dissection's numbers are defined (where levels come from)."""
    layer = layer_of(dissection, layer)
    q = dissection.get("quantile", 0.01)
    how = dissection.get("level_from", "upsampled")
    where = ("the top-q quantile of each unit's raw activations (feature-map resolution, all "
             "samples and positions), upsampled maps thresholded at it"
             if how == "raw" else "the top-q quantile of each unit's upsampled map (masks cover "
             "exactly q)")
    cov = dissection["layers"][layer].get("coverage")
    cover = f"; masks cover {cov['mean'] * 100:.2f} % of pixels on average" if cov else ""
    ignored = dissection.get("ignored_labels")
    return (f"# {layer}: levels from the {how} activations, q = {q}: {where}{cover}; IoU over all "
            f"samples' pixels, detector IoU ≥ {dissection.get('detector_iou', 0.04)}"
            + (f"; ignored labels: {', '.join(ignored)}" if ignored else ""))


def concept_table(dissection: dict, layer: str | None = None) -> list[dict]:
    """Per concept: number of detector units, best IoU and its unit; most detected first."""
    layer = layer_of(dissection, layer)
    lay = dissection["layers"][layer]
    rows = []
    for c in dissection["concepts"]:
        r = lay["ranking"].get(c, [])
        rows.append({"concept": c, "detectors": lay.get("detectors", {}).get(c, 0),
                     "best_iou": r[0]["iou"] if r else 0.0, "best_unit": r[0]["unit"] if r else -1})
    return sorted(rows, key=lambda r: (-r["detectors"], -r["best_iou"]))
