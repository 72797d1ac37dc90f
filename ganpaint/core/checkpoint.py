"""Safe, atomic reading and writing of weights and run state.

Every file ganpaint loads goes through `load`: `weights_only=True`, so a checkpoint that
carries pickled code is refused, and a truncated or corrupt file raises an error that names it.
Writes go to a temporary file first, so a run killed mid-save never leaves a broken file.
"""
from __future__ import annotations

import os
import pickle
import threading
import warnings
import zipfile
from pathlib import Path

import torch

from ganpaint import home

MODELS: Path = home.path("models")  # the shipped weights (see ganpaint.home for where)


class CheckpointError(RuntimeError):
    """A weights or state file that cannot be loaded; the message says which file and why."""


def run_paths(out_dir, export_to) -> Path:
    """Check a training run's folder and export file before any work is done (a run that
    fails at its first save loses that work): returns the run folder as a Path."""
    out_dir, export_to = Path(out_dir), Path(export_to)
    for p in (out_dir, *out_dir.parents):
        if p.exists() and not p.is_dir():
            raise ValueError(f"--out {out_dir}: {p} is a file, not a folder; give a folder for "
                             f"the run's state")
    if export_to.is_dir():
        raise ValueError(f"--export {export_to} is a folder; give a weights file name (.pt)")
    for p in export_to.parents:
        if p.exists() and not p.is_dir():
            raise ValueError(f"--export {export_to}: {p} is a file, not a folder")
    return out_dir


def atomic_write(path, write) -> None:
    """Write `path` through `write(binary file)` under a temporary name, then rename: a reader
    (or a run killed meanwhile) never sees a partial file. The temporary name is the writer's
    own (process and thread), so concurrent writers of one file do not collide."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save(obj, path) -> None:
    """Write `obj` with torch.save to `path` atomically."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load(path, map_location="cpu"):
    """Load a torch file safely (no code execution); clear errors for bad files."""
    path = Path(path)
    if not path.exists():
        rel = _shipped(path)
        if rel:  # a shipped weights file: say where shipped files are looked for
            raise CheckpointError(f"{path}: file not found. {home.missing('models', rel)}")
        raise CheckpointError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses globals (classes, functions: the way pickles run code); any other
        # unpickling failure is bytes that are no torch file at all
        if "GLOBAL" in str(e):
            raise CheckpointError(
                f"{path}: refused to load: the file contains pickled Python objects or code, "
                f"which ganpaint never executes (weights_only=True). Re-save it as a plain state "
                f"dict (torch.save(model.state_dict(), ...)). Details: {_detail(e)}") from None
        raise _unreadable(path, e) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError) as e:
        raise _unreadable(path, e) from None


def _shipped(path: Path) -> str:
    """`path` relative to the shipped models folder ('' when it lies elsewhere)."""
    try:
        return path.resolve().relative_to(MODELS.resolve()).as_posix()
    except (OSError, ValueError):
        return ""


def _unreadable(path, e) -> CheckpointError:
    return CheckpointError(f"{path}: cannot read this file (not a torch file, truncated or "
                           f"corrupt?): {_detail(e) or type(e).__name__}")


def _detail(e) -> str:
    """The informative line of torch.load's long message."""
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    pick = [l for l in lines if "GLOBAL" in l or "Unsupported" in l or "invalid load key" in l]
    return (pick or lines or [""])[0]


def resume(path, parts: dict, device="cpu", log=print, optional=()) -> int:
    """Load a training run's state into `parts` ({name: module or optimizer}) if `path`
    exists; returns the step to continue from (0 for a fresh run). Parts named in `optional`
    may be missing from an older run's state (added to the recipe later): they start fresh."""
    path = Path(path)
    if not path.exists():
        return 0
    state = load(path, device)
    for name, part in parts.items():
        if name in optional and name not in state:
            log(f"{path}: no {name!r} in this state (an older recipe): it starts fresh")
            continue
        part.load_state_dict(state[name])
    log(f"resumed from {path} at step {state['step']}")
    return int(state["step"])
