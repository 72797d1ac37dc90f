"""Concept names and overlay colours, read from the shipped assets/labels.json.

One list, shared by the renderer, the segmenter and every report, so that a label index
means the same thing everywhere.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ganpaint import home
from ganpaint.core.names import lookup as _lookup

ASSETS: Path = home.path("assets")  # the shipped assets (see ganpaint.home for where)


def _load():
    data = json.loads(home.require("assets", "labels.json").read_text())
    return data["concepts"]


_ENTRIES = _load()
CONCEPTS: list[str] = [e["name"] for e in _ENTRIES]
COLORS: np.ndarray = np.array([e["color"] for e in _ENTRIES], dtype=np.uint8)
ALIASES: dict[str, str] = {a: e["name"] for e in _ENTRIES for a in e["aliases"]}
INDEX = {name: i for i, name in enumerate(CONCEPTS)}


def lookup(name: str, concepts: list[str] | None = None) -> int:
    """Index of a concept by name or one of the world's aliases in `concepts` (default: ours)."""
    return _lookup(name, CONCEPTS if concepts is None else concepts, ALIASES)


def colorize(labels: np.ndarray, colors: np.ndarray | None = None) -> np.ndarray:
    """An (H, W) label map as an (H, W, 3) uint8 picture."""
    colors = COLORS if colors is None else colors
    return colors[np.asarray(labels)]
