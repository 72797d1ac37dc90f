"""Dissection: which concept each unit of a layer detects, in one pass over the samples.

Per batch: the source gives activations and label maps; each unit's activation is upsampled
bilinearly to the label resolution and counted into `TailStats`. A unit's level is its top-q
quantile over its raw activations (level_from="raw", the default: the published method) or over
its upsampled map ("upsampled"); the upsampled map is thresholded at that level either way.
A label the segmenter declares as "no label" (`ignore_index`, or a concept named "-") is
counted as pixels but is never a concept: not scored, ranked, or listed. Partial statistics are saved
every minute, so an interrupted run resumes where it stopped with the same result; under
`torchrun` each rank takes every world-th batch and the counts are summed at the end.
"""
from __future__ import annotations

import contextlib
import gc
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ganpaint.core import checkpoint
from ganpaint.core.stats import BINNING, TailStats
from ganpaint.core.dissection import Dissection
from ganpaint.core.upsample import interp_matrix

DETECTOR_IOU = 0.04  # minimum IoU to call a unit a detector (GAN Dissection, Network Dissection)
LEVEL_QUANTILES = (0.01, 0.005)  # per-unit levels kept for the intervention engine


def _dist():
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist, dist.get_rank(), dist.get_world_size()
    return None, 0, 1


@contextlib.contextmanager
def distributed():
    """Join the process group when launched by torchrun (WORLD_SIZE > 1) and leave it cleanly.

    Leaving matters: a rank that exits while gloo's threads still run aborts
    ("terminate called without an active exception") and torchrun reports a failure."""
    import torch.distributed as dist
    joined = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    if joined:
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group("nccl")
        else:
            dist.init_process_group("gloo")
    try:
        yield
        if joined:
            dist.barrier()
    finally:
        if joined:
            dist.destroy_process_group()


def _comm_device(dist):
    """NCCL moves CUDA tensors only; gloo CPU ones."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def _warm_values(act, size, cap=1 << 15):
    """(U, M ≤ cap) upsampled values of one batch, for placing the histogram bins: the
    upsampled maps on a grid of every step-th row and column (an even sample of positions)."""
    n, units, h, w = act.shape
    step = max(1, math.ceil(math.sqrt(n * size * size / cap)))
    ry, rx = interp_matrix(h, size, act.device)[::step], interp_matrix(w, size, act.device)[::step]
    return (ry @ act.float().transpose(0, 1) @ rx.T).reshape(units, -1)


def _warm_raw(act, cap=1 << 15):
    """(U, M ≤ cap) raw values of one batch on a grid of every step-th row and column."""
    n, units, h, w = act.shape
    step = max(1, math.ceil(math.sqrt(n * h * w / cap)))
    return act[:, :, ::step, ::step].float().transpose(0, 1).reshape(units, -1)


def ignored(source) -> list[int]:
    """Label indices of `source` that mean "no label": a concept named "-", and the
    segmenter's (or source's) `ignore_index`."""
    concepts = list(source.concepts)
    out = {i for i, c in enumerate(concepts) if c == "-"}
    ix = getattr(source, "ignore_index", None)
    if ix is not None and 0 <= ix < len(concepts):
        out.add(int(ix))
    return sorted(out)


def _settings(source, layers, samples, quantile, batch_size, bins, topk, tail, level_from):
    """The run's settings, checked before any work (recorded with it: a partial run made
    with other settings is not resumed)."""
    for name, v in (("samples", samples), ("batch size", batch_size)):
        if int(v) < 1:
            raise ValueError(f"{name} must be at least 1, got {v}")
    TailStats(1, 1, quantile, bins, topk, tail, level_from)  # checks the statistics' settings
    source.check_layers(layers)
    return {**source.describe(), "layers": list(layers), "samples": int(samples),
            "quantile": float(quantile), "batch_size": int(batch_size), "bins": int(bins),
            "topk": int(topk), "tail": tail, "binning": BINNING, "level_from": level_from}


def tally(source, layers, samples=2000, quantile=None, batch_size=16, bins=1024, topk=8,
          tail=None, level_from="raw", progress=True) -> dict[str, TailStats]:
    """Count every layer's statistics over `samples` samples of `source`, in memory: no files,
    nothing to resume. {layer: TailStats}; under torchrun every rank gets the totals.

    `dissect` runs the same counting with saves, resuming and a summary; use this to compute
    something else from the counts (levels at other quantiles, best-threshold IoUs, ...)."""
    layers = list(layers)
    quantile = getattr(source, "quantile", 0.01) if quantile is None else quantile
    settings = _settings(source, layers, samples, quantile, batch_size, bins, topk, tail, level_from)
    state = {"stats": None, "done": set()}
    _count(source, settings, state, progress)
    dist, _, _ = _dist()
    if dist is not None:
        for st in state["stats"].values():
            st.all_reduce(dist, _comm_device(dist))
    return state["stats"]


def dissect(source, layers, out_dir=None, samples=2000, quantile=None, batch_size=16, bins=1024,
            topk=8, save_seconds=60.0, progress=True, report=None, log=print, tail=None,
            level_from="raw") -> Dissection | None:
    """Dissect `layers` of `source` (a generator with a segmenter, or a classifier on a probe
    set): which concept each unit detects. Returns the `Dissection` (None on torchrun ranks
    other than 0).

    `quantile` defaults to the source's (0.01 for generators, 0.005 for classifiers);
    `level_from`: "raw" (each unit's level is the top quantile of its raw activations, as in the
    published method) or "upsampled" (of its upsampled map: masks cover exactly q of the pixels).

    With `out_dir`, the run is saved there: dissection.json and results.npz (and what
    `report(out_dir, dissection, source, log=...)` writes, e.g. `ganpaint.apps.report.make_report`),
    partial counts every `save_seconds` so an interrupted run resumes, one dissection at a
    time per folder (a lock file; the second is refused), dissection.json last: a folder with
    one holds complete results. Without it, everything stays in memory."""
    layers = list(layers)
    quantile = getattr(source, "quantile", 0.01) if quantile is None else quantile
    settings = _settings(source, layers, samples, quantile, batch_size, bins, topk, tail, level_from)
    if out_dir is None:
        stats = tally(source, layers, samples, quantile, batch_size, bins, topk, tail,
                      level_from, progress)
        if _dist()[1] > 0:
            return None
        with _no_gc():
            summary, arrays = summarize(settings, source.concepts, stats, ignored(source),
                                        getattr(source, "aliases", None), getattr(source, "categories", None))
        return Dissection(summary, arrays=arrays)
    out_dir = output_dir(out_dir)
    dist, rank, world = _dist()
    part = out_dir / "partial" / (f"state.rank{rank}of{world}.pt" if world > 1 else "state.pt")
    lock, status = None, None
    if rank == 0:
        try:
            lock = _Lock(out_dir / LOCK)
        except ValueError as e:
            status = ("error", str(e), None)
    try:
        state = _agree(status or _saved(part, settings, out_dir, getattr(source, "resume_hint", None)),
                       dist, rank, log)
        if state is None:
            part.unlink(missing_ok=True)  # starting over: no stale state to pair with new ones
        return _run(source, out_dir, settings, part, state, save_seconds, progress, report, log)
    finally:
        if lock is not None:
            lock.release()


LOCK = "dissect.lock"


def output_dir(path) -> Path:
    """`path` as an output folder, created if needed; clear errors for a file in the way."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"output folder {path} is an existing file: choose a folder path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        above = next((p for p in path.parents if p.exists() and not p.is_dir()), path.parent)
        raise ValueError(f"cannot create output folder {path}: {above} is a file") from None
    except PermissionError:
        raise ValueError(f"cannot create output folder {path}: permission denied") from None
    return path


class _Lock:
    """A lock file held while a dissection writes into a folder, so that a second dissection
    into the same folder is refused instead of mixing its files with the first's. A lock left
    behind by a process that no longer runs (killed) is taken over."""

    def __init__(self, path: Path):
        self.path = path
        mine = path.with_name(f"{path.name}.{os.getpid()}")
        mine.write_text(f"{os.getpid()}\n")
        try:
            for _ in range(2):
                try:  # a hard link appears with its content at once: no half-written lock
                    os.link(mine, path)
                    return
                except FileExistsError:
                    holder = self._holder()
                    if holder is not None:
                        raise ValueError(f"another dissection (process {holder}) is writing to "
                                         f"{path.parent}: wait for it to finish, or use another "
                                         f"--out") from None
                    path.unlink(missing_ok=True)  # stale: its process is gone
        finally:
            mine.unlink(missing_ok=True)
        raise ValueError(f"cannot take the lock {path}: delete it if no dissection is running")

    def _holder(self):
        """The pid holding the lock if that process still runs, else None."""
        try:
            pid = int(self.path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None  # being written, or garbage: treated as stale
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # another user's process: alive
        return pid

    def release(self):
        self.path.unlink(missing_ok=True)


def _saved(part, settings, out_dir, hint=None):
    """This rank's saved state as ("none" | "ok" | "error", message, state). `hint(saved
    settings)`, from the source, may say how to resume a run made with other settings."""
    if not part.exists():
        return ("none", None, None)
    try:
        state = checkpoint.load(part)
        saved = state["settings"]
    except (checkpoint.CheckpointError, KeyError, TypeError) as e:
        return ("error", f"{part}: unreadable partial state ({e}): delete {part.parent} to "
                         f"start over", None)
    if saved != settings:
        diff = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v}
        what = ("a finished dissection" if (out_dir / "dissection.json").exists()
                else "a partial run")
        how = hint(saved) if hint is not None else None
        return ("error", f"{out_dir} holds {what} with other settings {diff} (saved, "
                         f"requested): {how + '; or ' if how else ''}use another --out, or delete "
                         f"{out_dir} to redo it", None)
    return ("ok", None, state)


def _agree(status, dist, rank, log):
    """The state every rank starts from, decided by rank 0 from all ranks' saved states: each
    rank resumes its own only if every rank has one; if some rank has none (it died before its
    first save), all start over together, since resumed and fresh ranks would wait for each
    other forever. One error (other settings, a lock, a bad file) stops every rank."""
    statuses = [status]
    if dist is not None:
        statuses = [None] * dist.get_world_size() if rank == 0 else None
        dist.gather_object(status, statuses, dst=0)
    decision = [None]
    if rank == 0:
        errors = [s[1] for s in statuses if s[0] == "error"]
        missing = [r for r, s in enumerate(statuses) if s[0] == "none"]
        decision = [("error", errors[0]) if errors else ("fresh", missing) if missing
                    else ("resume", None)]
    if dist is not None:
        dist.broadcast_object_list(decision, src=0)
    kind, detail = decision[0]
    if kind == "error":
        raise ValueError(detail)
    if kind == "fresh" and rank == 0 and len(detail) < len(statuses):
        log(f"rank(s) {', '.join(map(str, detail))} have no saved state: all ranks start over")
    return status[2] if kind == "resume" else None


def _check_finite(acts, idx):
    for name, a in acts.items():
        if not torch.isfinite(a).all():
            raise ValueError(f"layer {name} has NaN or infinite activations (samples "
                             f"{idx[0]}–{idx[-1]}): check the model's weights")


def _count(source, settings, state, progress, after_batch=None):
    """Count the batches this rank still has to do into state["stats"] (made from batch 0 when
    None), adding each to state["done"]; `after_batch()` runs after each (the periodic save)."""
    dist, rank, world = _dist()
    layers, samples, batch_size = settings["layers"], settings["samples"], settings["batch_size"]
    mine = [b for b in range(math.ceil(samples / batch_size)) if b % world == rank]
    todo = [b for b in mine if b not in state["done"]]
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), disable=not progress or rank > 0,
               desc=f"dissect {','.join(layers)}", unit="batch")
    try:
        warm = None
        if state["stats"] is None:
            state["stats"], warm = _start(source, settings, dist, rank)
        stats = state["stats"]
        for b in todo:
            idx = list(range(b * batch_size, min(samples, (b + 1) * batch_size)))
            if b == 0 and warm is not None:  # batch 0 placed the bins: count it, don't rerun it
                acts, labels = warm
            else:
                acts, labels, _ = source.batch(idx, layers)
                _check_finite(acts, idx)
            for name in layers:
                a = acts[name]
                stats[name].update_top(a.amax((2, 3)), torch.tensor(idx))
                stats[name].update(a, labels)
            state["done"].add(b)
            bar.update(1)
            if after_batch is not None:
                after_batch()
    finally:
        bar.close()  # ends the bar's line, so a message after it starts on its own


def _run(source, out_dir, settings, part, saved_state, save_seconds, progress, report, log):
    """The saved, resumable counting of `dissect(out_dir=...)`, then the results' files."""
    dist, rank, world = _dist()
    state = {"stats": None, "done": set()}
    if saved_state is not None:
        state["stats"] = {k: TailStats.from_state_dict(v) for k, v in saved_state["stats"].items()}
        state["done"] = set(saved_state["done"])
        log(f"resuming {out_dir}: {len(state['done'])} batches already done")
    saved = [time.monotonic()]

    def save():
        saved[0] = time.monotonic()
        checkpoint.save({"settings": settings, "done": sorted(state["done"]),
                         "stats": {k: v.state_dict() for k, v in state["stats"].items()}}, part)

    def every_minute():
        if time.monotonic() - saved[0] >= save_seconds:
            save()

    try:
        _count(source, settings, state, progress, every_minute)
    except KeyboardInterrupt:
        if state["stats"] is None:
            raise KeyboardInterrupt("interrupted before the first batch: nothing to save") from None
        save()
        raise KeyboardInterrupt(f"progress saved in {part}: run the same command to resume") from None
    save()
    if dist is not None:
        for st in state["stats"].values():
            st.all_reduce(dist, _comm_device(dist))
    if rank == 0:
        return write_results(out_dir, settings, source.concepts, state["stats"], source,
                             report, log)
    return None


def _start(source, settings, dist, rank):
    """Place every layer's bins from the activations of batch 0 (rank 0 broadcasts them).

    Returns the statistics and, on rank 0, batch 0's (activations, labels) for counting."""
    layers, concepts = settings["layers"], source.concepts
    quantile, bins, topk, tail, level_from = (settings[k] for k in (
        "quantile", "bins", "topk", "tail", "level_from"))
    stats, acts, labels = {}, None, None
    if rank == 0:
        idx = list(range(min(settings["samples"], settings["batch_size"])))
        acts, labels, _ = source.batch(idx, layers)
        _check_finite(acts, idx)
        size = labels.shape[-1]
    for name in layers:
        if rank == 0:
            units = acts[name].shape[1]
        else:
            units = None
        if dist is not None:
            box = [units]
            dist.broadcast_object_list(box, src=0)
            units = box[0]
        st = TailStats(units, len(concepts), quantile, bins, topk, tail, level_from)
        if rank == 0:
            st.init_edges(_warm_values(acts[name], size),
                          _warm_raw(acts[name]) if st.raw else None)
        else:
            st.edges = torch.zeros(units, bins + 1, dtype=torch.float64)
        if dist is not None:
            edges = st.edges.to(_comm_device(dist))
            dist.broadcast(edges, src=0)
            st.edges = edges.cpu()
            tie = torch.stack([st.tie.to(torch.float64), st.tie_value]).to(_comm_device(dist))
            dist.broadcast(tie, src=0)
            st.tie, st.tie_value = tie[0].cpu().bool(), tie[1].cpu()
        stats[name] = st
    return stats, ((acts, labels) if rank == 0 else None)


def summarize(settings, concepts, stats, ignore=(), aliases=None,
              categories=None) -> tuple[dict, dict]:
    """The dissection.json content: per unit its level, label and best IoUs; per concept a ranking.

    Labels in `ignore` ("no label") are left out of everything but the pixel counts: the
    dissection's `concepts`, IoU tables and rankings list the other concepts only. `aliases`
    (other words for concepts, from the segmenter) are kept for looking concepts up by name;
    `categories` ({concept: "object" | "part" | "material" | "colour" ...}) too.
    Returns (the document, the arrays for results.npz)."""
    ignore = sorted(set(int(i) for i in ignore))
    keep = [c for c in range(len(concepts)) if c not in ignore]
    names = [concepts[c] for c in keep]
    out = {**settings, "concepts": names, "detector_iou": DETECTOR_IOU, "layers": {}}
    out.setdefault("level_from", "upsampled")
    if ignore:
        out["ignored_labels"] = [concepts[c] for c in ignore]
    if aliases:
        out["aliases"] = {str(a): str(c) for a, c in aliases.items() if c in names}
    if categories:
        out["categories"] = {c: str(categories[c]) for c in names if c in categories}
    arrays = {}
    for name, st in stats.items():
        r = st.iou()
        iou = r["iou"].numpy()[:, keep]
        coverage = r["coverage"].numpy()
        levels = {str(q): st.level(q)[0].numpy() for q in LEVEL_QUANTILES}
        order = np.argsort(-iou, axis=1, kind="stable")
        level, exact, top = r["level"].tolist(), r["exact"].tolist(), st.top_index.tolist()
        units = []
        for u in range(st.units):  # Python lists here: indexing tensors per unit is slow
            best = [[names[c], round(float(iou[u, c]), 5)] for c in order[u, :5]]
            units.append({
                "unit": u, "level": round(level[u], 6),
                "levels": {q: round(float(v[u]), 6) for q, v in levels.items()},
                "label": best[0][0], "iou": best[0][1], "top": best,
                "top_samples": top[u], "exact": exact[u],
                "coverage": round(float(coverage[u]), 6)})
        ranking = {}
        for c, cname in enumerate(names):
            col = np.argsort(-iou[:, c], kind="stable")
            ranking[cname] = [{"unit": int(u), "iou": round(float(iou[u, c]), 5)}
                              for u in col if iou[u, c] > 0]
        detectors = {}
        for unit in units:
            if unit["iou"] >= DETECTOR_IOU:
                detectors[unit["label"]] = detectors.get(unit["label"], 0) + 1
        pixels = st.concept_pixels.tolist()
        out["layers"][name] = {
            "units": st.units, "pixels": st.pixels,
            "concept_pixel_fraction": {concepts[c]: round(float(pixels[c]) / max(st.pixels, 1), 6)
                                       for c in keep},
            "max_rank_error": float(r["rank_error"].max()),
            "max_iou_error": float(r["iou_error"][:, keep].max()) if keep else 0.0,
            "inexact_units": int((~r["exact"]).sum()),
            "coverage": {"min": round(float(coverage.min()), 6),
                         "mean": round(float(coverage.mean()), 6),
                         "max": round(float(coverage.max()), 6)},
            "detectors": dict(sorted(detectors.items(), key=lambda kv: -kv[1])),
            "unit_stats": units, "ranking": ranking}
        if ignore:
            out["layers"][name]["ignored_pixel_fraction"] = round(
                sum(pixels[c] for c in ignore) / max(st.pixels, 1), 6)
        bt_iou, bt_level = (t.numpy()[:, keep] for t in st.best_threshold_iou())
        out["layers"][name]["best_threshold_iou"] = {
            c: {"unit": int(bt_iou[:, i].argmax()), "iou": round(float(bt_iou[:, i].max()), 5),
                "threshold": round(float(bt_level[bt_iou[:, i].argmax(), i]), 6)}
            for i, c in enumerate(names)}
        out["layers"][name]["tail"] = st.tail
        arrays[f"{name}/best_threshold_iou"] = bt_iou.astype(np.float32)
        arrays[f"{name}/iou"] = iou.astype(np.float32)
        arrays[f"{name}/level"] = r["level"].numpy().astype(np.float32)
    return out, arrays


@contextlib.contextmanager
def _no_gc():
    """Pause the cyclic garbage collector: the summary makes thousands of small dicts and lists
    (no cycles), which would trigger full collections over every object torch keeps (~70 ms)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def write_results(out_dir, settings, concepts, stats, source=None, report=None, log=print,
                  ignore=None) -> Dissection:
    """The report, then results.npz and dissection.json last (`Dissection.save`): each written
    under a temporary name and renamed, so a folder with a dissection.json holds complete
    results (a run killed before it resumes, with nothing left to count, and writes them again)."""
    with _no_gc():
        out, arrays = summarize(settings, concepts, stats,
                                ignored(source) if ignore is None and source is not None else ignore or (),
                                getattr(source, "aliases", None), getattr(source, "categories", None))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in settings["layers"]:
        lay = out["layers"][name]
        log(f"{name}: {lay['units']} units, detectors {lay['detectors']}, levels from the "
            f"{out['level_from']} activations (masks cover {lay['coverage']['mean'] * 100:.2f} % "
            f"of pixels on average), max rank error {lay['max_rank_error']:.5f}, max IoU error "
            f"bound {lay['max_iou_error']:.4f}")
    d = Dissection(out, arrays=arrays)
    if report and source is not None:
        report(out_dir, d, source, log=log)
    d.save(out_dir)  # results.npz, then dissection.json
    return Dissection.load(out_dir)  # with any learned rankings already in the folder
