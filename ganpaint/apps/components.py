"""The painting app's Gradio components where Gradio's own do more work than the app needs.

The brush canvas (`StrokeCanvas`): every reply puts a new scene on the canvas, and every stroke
sends the canvas back. The app never reads back the background or the composite (the scene is
regenerated from the session's seed and strokes), so only the brush layers are decoded, and the
background goes out as a fast PNG.

The photo upload (`PhotoUpload`): Gradio rebuilds every component's API schema for every new
session, three times, and the upload button's is not cached: with 16 people arriving at once
that was a tenth of the server's work.

Subclasses, not settings on one instance: Gradio builds a fresh instance of the class for a
session whenever a handler updates the component (`gr.skip()` does), and an instance's own
settings would be lost from then on.

Importing this module imports Gradio (the app's dependency, not the library's). Gradio writes a
type-stub file (components.pyi) beside any module that defines a component class; it is
generated, ignored by git, and a read-only install just goes without it.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import gradio as gr
import numpy as np

from ganpaint.apps.serving import encode_png
from ganpaint.core.checkpoint import atomic_write


def cache_png(img: np.ndarray, cache_dir) -> str:
    """`img` as a fast PNG (`encode_png`) in Gradio's cache, named by its content as Gradio
    names its own files (the same scene is one file)."""
    data = encode_png(img)
    path = Path(cache_dir) / hashlib.sha256(data).hexdigest() / "scene.png"
    if path.exists():
        os.utime(path)  # sent again: young again for the cache janitor
    else:
        atomic_write(path, lambda f: f.write(data))
    return str(path)


class StrokeCanvas(gr.ImageEditor):
    """Gradio's image editor whose background goes out as a fast PNG and of whose value only the
    brush layers are decoded (an expired cache file of the background breaks nothing)."""

    is_template = True  # drawn by the browser as Gradio's own image editor

    def preprocess(self, payload):
        """The browser's value with the background and composite dropped before decoding."""
        if payload is not None:
            cached = self.blob_storage.get(payload.id) if payload.id is not None else None
            for p in (payload, cached):
                if p is not None:
                    p.background = p.composite = None
        return super().preprocess(payload)

    def postprocess(self, value):
        """The reply's value, its background array written by `cache_png`."""
        if isinstance(value, dict) and isinstance(value.get("background"), np.ndarray):
            value = {**value, "background": cache_png(value["background"], self.GRADIO_CACHE)}
        return super().postprocess(value)


class PhotoUpload(gr.UploadButton):
    """Gradio's upload button, its API schema computed once."""

    is_template = True  # drawn by the browser as Gradio's own upload button

    def api_info(self):
        """The button's API schema (the same for every session)."""
        if getattr(self, "_api_info_cache", None) is None:
            self._api_info_cache = super().api_info()
        return self._api_info_cache
