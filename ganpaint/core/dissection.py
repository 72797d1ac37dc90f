"""A dissection's results as one object: what each unit detects, and the rankings read from it.

`Dissection` is the one place that reads a dissection folder (dissection.json, results.npz and
the learned rankings beside them), checks it, and answers the questions every application
asks: the units of a layer ranked for a concept (by IoU, or by a learned causal ranking), a
unit's level at a quantile, the concepts with the most detectors. It is also a read-only
mapping of the dissection.json document, for code and people that want the raw numbers.
"""
from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ganpaint.core.checkpoint import atomic_write
from ganpaint.core.names import lookup, unknown
from ganpaint.core.stats import LEVEL_FROM

RANKINGS = ("iou", "causal", "local", "insert")  # by IoU, or by learned causal effect: removal
# everywhere or where the concept is, or insertion in one cell (see causal.py)
LEARNED = {"causal": "causal", "local": "causal_local", "insert": "causal_insert"}  # ranking →
# its key in a dissected layer


class Dissection(Mapping):
    """The dissection.json document of one dissection, with its learned rankings merged in.

    Made by `dissect()` (in memory, or written to a folder) or read with `Dissection.load`.
    `path` is the folder it lives in (None for one made in memory); `aliases` maps other words
    to concept names ("trees" → "tree"), as the segmenter declared them."""

    def __init__(self, summary: dict, path=None, aliases: dict | None = None, arrays=None):
        self.summary = summary
        self.path = None if path is None else Path(path)
        self._arrays = arrays  # results.npz's content, for a dissection made in memory
        self.aliases = dict(summary.get("aliases") or {}) if aliases is None else dict(aliases)

    @classmethod
    def of(cls, d) -> "Dissection":
        """`d` as a Dissection (a dissection.json dict is wrapped; a Dissection is returned)."""
        return d if isinstance(d, Dissection) else cls(d)

    # -- the document ------------------------------------------------------------------------
    def __getitem__(self, key):
        return self.summary[key]

    def __iter__(self):
        return iter(self.summary)

    def __len__(self):
        return len(self.summary)

    def __repr__(self):
        where = f" at {self.path}" if self.path else ""
        return (f"Dissection({self.model!r}, layers {self.layers}, {len(self.concepts)} "
                f"concepts{where})")

    @property
    def concepts(self) -> list[str]:
        """The concepts scored, in label order ("no label" ones left out)."""
        return self.summary["concepts"]

    @property
    def layers(self) -> list[str]:
        """The dissected layers' names."""
        return list(self.summary["layers"])

    @property
    def model(self) -> str:
        """The generator or classifier dissected (a registry name or import path)."""
        return self.summary.get("model", "")

    @property
    def seed(self) -> int:
        """The latent seed of the samples (sample i is the same in every command)."""
        return int(self.summary.get("seed", 0))

    @property
    def quantile(self) -> float:
        """The top quantile q of the units' levels."""
        return float(self.summary.get("quantile", 0.01))

    def layer(self, name: str | None = None) -> str:
        """A dissected layer's name (the first when None); unknown names list the valid ones."""
        if name is None:
            return self.layers[0]
        if name not in self.summary["layers"]:
            raise unknown("dissected layer", name, self.layers)
        return name

    def units(self, layer: str | None = None) -> int:
        """How many units the layer has."""
        return self.summary["layers"][self.layer(layer)]["units"]

    def unit_stats(self, layer: str | None = None) -> list[dict]:
        """Per unit: level(s), best concepts and IoUs, top samples (the dissection's table)."""
        return self.summary["layers"][self.layer(layer)]["unit_stats"]

    def concept(self, name: str) -> str:
        """A concept's canonical name from a name or alias, any case."""
        return self.concepts[lookup(name, self.concepts, self.aliases)]

    def level(self, unit: int, q: float | None = None, layer: str | None = None) -> float:
        """The unit's activation level at top quantile `q` (the dissection's own when None):
        the value an insertion sets the unit to, and the mask threshold."""
        stats = self.unit_stats(layer)[int(unit)]
        levels = stats.get("levels", {})  # files from before several quantiles were kept
        if q is None or float(q) == self.quantile:
            return float(levels.get(str(self.quantile), stats["level"]))
        for key, v in levels.items():
            if float(key) == float(q):
                return float(v)
        raise unknown("quantile", q, list(dict.fromkeys([self.quantile] + [float(k) for k in levels])))

    def results(self, layer: str | None = None) -> dict:
        """{iou (units, concepts), level (units,), best_threshold_iou (units, concepts)} arrays
        of one layer (results.npz, or kept in memory)."""
        layer = self.layer(layer)
        if self._arrays is not None:
            return {k.split("/", 1)[1]: v for k, v in self._arrays.items()
                    if k.startswith(f"{layer}/")}
        if self.path is None:
            raise ValueError("this dissection has no arrays (made from a document alone)")
        return load_results(self.path, layer)

    # -- rankings ----------------------------------------------------------------------------
    def rank(self, concept: str, by: str = "iou", layer: str | None = None,
             top: int | None = 20) -> list[dict]:
        """[{rank, unit, iou, level, alpha?}] of the `top` units (None: all ranked) of `layer`
        for `concept`.

        by="iou": IoU with the concept; "causal" / "local" / "insert": a learned causal ranking
        (`ganpaint rank-causal`, with `--local` or `--insert` for the last two)."""
        layer = self.layer(layer)
        name = self.concept(concept)
        lay = self.summary["layers"][layer]
        stats = lay["unit_stats"]
        if top is not None and int(top) < 0:  # a negative slice would drop the best units instead
            raise ValueError(f"top must be at least 0 (units to list), got {top}")
        if by == "iou":
            rows = lay["ranking"].get(name, [])[:top]
        elif by in LEARNED:
            learned = lay.get(LEARNED[by], {})
            if name not in learned:
                raise ValueError(f"no {by} ranking for {name!r} in layer {layer} (have: "
                                 f"{', '.join(sorted(learned)) or 'none'}); run `ganpaint "
                                 f"rank-causal --concepts {name}{'' if by == 'causal' else ' --' + by}`")
            rows = learned[name]["ranking"][:top]
        else:
            raise unknown("ranking", by, RANKINGS)
        iou = {r["unit"]: r["iou"] for r in lay["ranking"].get(name, [])}
        return [{"rank": i + 1, "unit": r["unit"], "iou": iou.get(r["unit"], 0.0),
                 "level": stats[r["unit"]]["level"],
                 **({"alpha": r["alpha"]} if "alpha" in r else {})}
                for i, r in enumerate(rows)]

    def top_units(self, concept: str, n: int = 20, by: str = "iou",
                  layer: str | None = None) -> list[int]:
        """The ids of the `n` best units for `concept` (see `rank`)."""
        return [r["unit"] for r in self.rank(concept, by, layer, n)]

    def best_ranking(self, concept: str, layer: str | None = None, local: bool = False,
                     insert: bool = False) -> str:
        """The learned ranking for how the units will be used when there is one — "insert"
        for drawing, "local" for edits inside a region (painting), "causal" for edits
        everywhere, the others as fallbacks — else "iou"."""
        lay = self.summary["layers"][self.layer(layer)]
        name = self.concept(concept)
        order = ("local", "causal") if local else ("causal", "local")
        for by in (("insert",) + order if insert else order):
            if name in lay.get(LEARNED[by], {}):
                return by
        return "iou"

    def concept_table(self, layer: str | None = None) -> list[dict]:
        """Per concept: number of detector units, best IoU and its unit; most detected first."""
        lay = self.summary["layers"][self.layer(layer)]
        rows = []
        for c in self.concepts:
            r = lay["ranking"].get(c, [])
            rows.append({"concept": c, "detectors": lay.get("detectors", {}).get(c, 0),
                         "best_iou": r[0]["iou"] if r else 0.0,
                         "best_unit": r[0]["unit"] if r else -1})
        return sorted(rows, key=lambda r: (-r["detectors"], -r["best_iou"]))

    def category_counts(self) -> dict:
        """Per layer and concept category (object, part, material, colour, ...): the number of
        unique concepts detected (a unit's best concept with IoU ≥ the detector bar) and of
        detector units, Network Dissection's headline chart. Needs the concepts' categories
        (a classifier dissected with all probe labels)."""
        cats = self.summary.get("categories")
        if not cats:
            raise ValueError("this dissection has no concept categories: dissect the classifier "
                             "with `--probe-labels all` (the default for `dissect --classifier`)")
        order = list(dict.fromkeys(cats.values()))
        out = {"detector_iou": self.summary.get("detector_iou", 0.04), "categories": order,
               "layers": {}}
        for layer in self.layers:
            found = self.summary["layers"][layer].get("detectors", {})  # {concept: units}
            row = {"unique": {c: 0 for c in order}, "detectors": {c: 0 for c in order},
                   "concepts": {c: [] for c in order}}
            for concept, units in found.items():
                c = cats.get(concept)
                if c is None:
                    continue
                row["unique"][c] += 1
                row["detectors"][c] += units
                row["concepts"][c].append(concept)
            out["layers"][layer] = row
        return out

    def definition(self, layer: str | None = None) -> str:
        """One line saying how the dissection's numbers are defined (where levels come from)."""
        layer = self.layer(layer)
        d = self.summary
        how = d.get("level_from", "upsampled")
        where = ("the top-q quantile of each unit's raw activations (feature-map resolution, all "
                 "samples and positions), upsampled maps thresholded at it"
                 if how == "raw" else "the top-q quantile of each unit's upsampled map (masks "
                 "cover exactly q)")
        cov = d["layers"][layer].get("coverage")
        cover = f"; masks cover {cov['mean'] * 100:.2f} % of pixels on average" if cov else ""
        ignored = d.get("ignored_labels")
        return (f"# {layer}: levels from the {how} activations, q = {self.quantile}: {where}"
                f"{cover}; IoU over all samples' pixels, detector IoU ≥ "
                f"{d.get('detector_iou', 0.04)}"
                + (f"; ignored labels: {', '.join(ignored)}" if ignored else ""))

    # -- learned rankings --------------------------------------------------------------------
    def add_learned(self, result: dict) -> Path | None:
        """Merge one learned ranking (`causal.learn`'s result) in, and save it beside
        dissection.json when the dissection lives in a folder; returns that file."""
        kind = result.get("kind") or ("local" if result.get("local") else "causal")
        lay = self.summary["layers"][self.layer(result["layer"])]
        lay.setdefault(LEARNED[kind], {})[result["concept"]] = result
        if self.path is None:
            return None
        f = learned_path(self.path, kind)
        data = _read_learned(self.path, kind)
        data.setdefault(result["layer"], {})[result["concept"]] = result
        atomic_write(f, lambda out: out.write(json.dumps(data, indent=1).encode()))
        return f

    # -- files -------------------------------------------------------------------------------
    @classmethod
    def load(cls, path) -> "Dissection":
        """Read a dissection folder (or its dissection.json), with its learned rankings merged
        in. The file is data: its structure is checked here, so a damaged or foreign file is
        named in one error instead of failing later deep inside painting."""
        path = Path(path)
        f = path / "dissection.json" if path.is_dir() else path
        if not f.exists():
            raise FileNotFoundError(f"{f}: no dissection here (run `ganpaint dissect --out {path}`)")
        try:
            d = json.loads(f.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{f}: corrupt dissection file: {e}") from None
        _check_structure(d, f)
        # written before the choice existed: levels were read off the upsampled maps
        d.setdefault("level_from", "upsampled")
        _need(d["level_from"] in LEVEL_FROM, f, f"'level_from' must be one of {', '.join(LEVEL_FROM)}")
        _need(isinstance(d.get("model_args", {}), dict), f, "'model_args' must be an object")
        _need(isinstance(d.get("aliases", {}), dict), f, "'aliases' must be an object")
        for kind, key in LEARNED.items():
            for layer, learned in _read_learned(f.parent, kind).items():
                if layer in d["layers"]:
                    d["layers"][layer][key] = learned
        _check_rankings(d, f)
        return cls(d, f.parent)

    def save(self, path) -> Path:
        """Write the dissection into folder `path`, each file atomically and dissection.json last
        (a folder with one holds a complete dissection): results.npz (the arrays kept in memory,
        or copied from the folder it was loaded from), the learned rankings it holds (files
        already there for other concepts are kept), then dissection.json."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        src = None if self.path is None else Path(self.path) / "results.npz"
        if self._arrays is not None:
            atomic_write(path / "results.npz", lambda f: np.savez_compressed(f, **self._arrays))
        elif src is not None and src.exists() and src.resolve() != (path / "results.npz").resolve():
            atomic_write(path / "results.npz", lambda f: f.write(src.read_bytes()))
        for kind, key in LEARNED.items():
            mine = {name: lay[key] for name, lay in self.summary["layers"].items() if lay.get(key)}
            if mine:
                data = _read_learned(path, kind)
                for name, rankings in mine.items():
                    data.setdefault(name, {}).update(rankings)
                atomic_write(learned_path(path, kind), lambda f: f.write(json.dumps(data, indent=1).encode()))
        learned = set(LEARNED.values())
        doc = {**self.summary, "layers": {
            name: {k: v for k, v in lay.items() if k not in learned}
            for name, lay in self.summary["layers"].items()}}
        # no indent: the C encoder, 5× faster
        atomic_write(path / "dissection.json", lambda f: f.write(json.dumps(doc).encode()))
        self.path = path
        return path / "dissection.json"


def learned_path(out_dir, kind="causal") -> Path:
    """Where a learned ranking kind ("causal" or "local") is kept: named by its dissection key."""
    return Path(out_dir) / f"{LEARNED[kind]}.json"


def _read_learned(out_dir, kind) -> dict:
    f = learned_path(out_dir, kind)
    if not f.exists():
        return {}
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{f}: corrupt causal ranking file: {e}") from None


def load_results(path, layer: str) -> dict:
    """{iou, level, best_threshold_iou} arrays of one layer from a dissection's results.npz."""
    f = Path(path) / "results.npz"
    keys = ("iou", "level", "best_threshold_iou")
    try:
        with np.load(f) as z:
            if f"{layer}/iou" not in z.files:
                have = sorted({k.split("/")[0] for k in z.files})
                raise ValueError(f"{f}: no results for layer {layer!r} (have: {', '.join(have) or 'none'})")
            return {k: z[f"{layer}/{k}"] for k in keys if f"{layer}/{k}" in z.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"{f}: no results here (run `ganpaint dissect --out {path}`)") from None
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        if str(e).startswith(str(f)):
            raise
        raise ValueError(f"{f}: corrupt results file ({type(e).__name__}: {e}): re-run the "
                         f"dissection into {path}") from None


def _need(ok, f, what):
    if not ok:
        raise ValueError(f"{f}: not a ganpaint dissection file: {what}")


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_structure(d, f):
    _need(isinstance(d, dict), f, f"holds a {type(d).__name__}, not an object")
    concepts = d.get("concepts")
    _need(isinstance(concepts, list) and concepts and all(isinstance(c, str) for c in concepts),
          f, "'concepts' must be a list of names")
    layers = d.get("layers")
    _need(isinstance(layers, dict) and layers, f, "'layers' must map layer names to results")
    for name, lay in layers.items():
        at = f"layer {name!r}"
        _need(isinstance(lay, dict), f, f"{at} is not an object")
        units = lay.get("units")
        _need(isinstance(units, int) and units >= 1, f, f"{at}: 'units' must be a positive count")
        stats = lay.get("unit_stats")
        _need(isinstance(stats, list) and len(stats) == units, f,
              f"{at}: 'unit_stats' must list {units} units")
        for u in stats:
            _need(isinstance(u, dict) and _is_num(u.get("level"))
                  and isinstance(u.get("levels", {}), dict)
                  and all(_is_num(v) for v in u.get("levels", {}).values()), f,
                  f"{at}: each unit needs a numeric 'level' and 'levels'")
        _need(isinstance(lay.get("ranking"), dict), f, f"{at}: 'ranking' must be an object")
        _need(isinstance(lay.get("detectors", {}), dict), f, f"{at}: 'detectors' must be an object")


def _check_rankings(d, f):
    """Every ranking (IoU and learned) lists units that exist."""
    for name, lay in d["layers"].items():
        n = lay["units"]
        lists = [(c, r) for c, r in lay["ranking"].items()]
        for key in LEARNED.values():
            learned = lay.get(key, {})
            _need(isinstance(learned, dict), f, f"layer {name!r}: {key} must be an object")
            lists += [(c, v.get("ranking") if isinstance(v, dict) else None)
                      for c, v in learned.items()]
        for c, rows in lists:
            _need(isinstance(rows, list) and all(
                isinstance(r, dict) and isinstance(r.get("unit"), int) and 0 <= r["unit"] < n
                for r in rows), f, f"layer {name!r}: the ranking of {c!r} must list units "
                                   f"0..{n - 1}")
