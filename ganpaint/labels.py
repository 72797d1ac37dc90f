"""Concept names and overlay colours, read from the shipped assets/labels.json.

One list, shared by the renderer, the segmenter and every report, so that a label index
means the same thing everywhere.
"""
from __future__ import annotations

import difflib
import json
from pathlib import Path

import numpy as np

from . import home

ASSETS: Path = home.path("assets")  # the shipped assets (see ganpaint.home for where)


class UnknownNameError(KeyError):
    """A name (concept, layer, model...) that is not known; the message lists the valid ones."""

    def __str__(self):  # KeyError would print the message with quotes around it
        return str(self.args[0])


def unknown(kind: str, name: str, valid) -> UnknownNameError:
    """Build the error for an unknown `name`, with close matches and the valid names."""
    valid = list(valid)
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return UnknownNameError(
        f"unknown {kind} {name!r}.{hint} Valid {kind}s: {', '.join(str(v) for v in valid)}")


def _load():
    data = json.loads(home.require("assets", "labels.json").read_text())
    return data["concepts"]


_ENTRIES = _load()
CONCEPTS: list[str] = [e["name"] for e in _ENTRIES]
COLORS: np.ndarray = np.array([e["color"] for e in _ENTRIES], dtype=np.uint8)
_ALIASES = {a: e["name"] for e in _ENTRIES for a in e["aliases"]}
INDEX = {name: i for i, name in enumerate(CONCEPTS)}


def lookup(name: str, concepts: list[str] | None = None) -> int:
    """Index of a concept by name or alias (case-insensitive) in `concepts` (default: ours)."""
    concepts = CONCEPTS if concepts is None else list(concepts)
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    lowered = [c.lower() for c in concepts]
    if key in lowered:
        return lowered.index(key)
    raise unknown("concept", name, concepts)


def colorize(labels: np.ndarray, colors: np.ndarray | None = None) -> np.ndarray:
    """An (H, W) label map as an (H, W, 3) uint8 picture."""
    colors = COLORS if colors is None else colors
    return colors[np.asarray(labels)]
