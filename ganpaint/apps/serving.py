"""How the painting app's images reach the browser without piling up files.

Every reply sends pictures: the canvas's scene goes through Gradio's cache folder (one entry per
reply), the cells and before/after views travel inside the page as PNG data URIs (no file at
all). PNGs are written with fast compression, since one is encoded per reply. A janitor keeps
Gradio's cache bounded, and sleeps while nobody is painting.

No Gradio import here: the rules are tested without a server.
"""
from __future__ import annotations

import base64
import io
import itertools
import shutil
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

# Gradio's reply cache gets one entry per reply (the canvas's scene; an upload adds one): the
# janitor keeps the newest entries holding CACHE_KEEP files and any younger than CACHE_GRACE
# seconds (a reply still being fetched), so storage stays bounded however many people paint.
CACHE_KEEP = 32
CACHE_GRACE = 10.0
ACTIVITY = threading.Event()  # set by every handler call (`touch`): wakes the janitor
REPLIES = itertools.count(1)  # numbers every embedded image: the page can tell a new reply


def encode_png(img: np.ndarray) -> bytes:
    """`img` as PNG bytes with compress level 1: about 5× faster than PIL's default level and
    20 % larger, which pays on every reply."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "png", compress_level=1)
    return buf.getvalue()


def png_html(img: np.ndarray | None, alt: str, width: int | None = None,
             pixelated: bool = False) -> str:
    """`img` embedded in the page as a PNG data URI, so views that change on every reply leave
    no file in Gradio's cache; shown `width` px wide, magnified with sharp pixels if `pixelated`.
    Empty for None."""
    if img is None:
        return ""
    w = width or img.shape[1]
    sharp = "image-rendering:pixelated;" if pixelated else ""
    return (f'<img src="data:image/png;base64,{base64.b64encode(encode_png(img)).decode()}" '
            f'alt="{alt}" title="{alt}" data-reply="{next(REPLIES)}" '
            f'style="width:{w}px;max-width:100%;margin-top:6px;{sharp}">')


def _prune(cache_dir, keep: int, grace: float) -> tuple[int, float | None]:
    """(deleted, wait): the newest entries holding `keep` files are kept (an entry is a file, or
    a folder of the files uploaded with one content), the older deleted unless younger than
    `grace` seconds; `wait` is how long until the oldest entry spared may go (None: none)."""
    root = Path(cache_dir)
    entries = []
    for e in (root.iterdir() if root.is_dir() else ()):
        try:
            files = sum(1 for _ in e.iterdir()) if e.is_dir() else 1
            entries.append((e.stat().st_mtime, e, files))
        except FileNotFoundError:  # deleted meanwhile
            pass
    entries.sort(reverse=True)
    now, gone, wait, files = time.time(), 0, None, 0
    for mtime, e, n in entries:
        files += n
        if files <= keep:
            continue
        if now - mtime < grace:
            wait = grace - (now - mtime)  # oldest last: the soonest to expire
            continue
        shutil.rmtree(e, ignore_errors=True) if e.is_dir() else e.unlink(missing_ok=True)
        gone += 1
    return gone, wait


def prune_cache(cache_dir, keep: int = CACHE_KEEP, grace: float = CACHE_GRACE) -> int:
    """Delete the oldest entries of Gradio's cache folder beyond the newest holding `keep` files,
    sparing any modified in the last `grace` seconds. Safe for the canvas: the server never reads a scene it
    sent back (see `ganpaint.apps.components`). Returns how many entries were deleted."""
    return _prune(cache_dir, keep, grace)[0]


def touch() -> None:
    """Tell the janitor a request came in (new cache entries may follow)."""
    ACTIVITY.set()


class _Stop(threading.Event):
    """A janitor's stop switch: setting it also wakes the janitor, so that it sees the stop."""

    def set(self):
        super().set()
        ACTIVITY.set()


def start_cache_janitor(cache_dir, period: float = 2.0, keep: int = CACHE_KEEP,
                        grace: float = CACHE_GRACE) -> threading.Event:
    """Prune `cache_dir` every `period` seconds while requests come in (`touch`), and until the
    entries spared for their youth are gone, each as soon as it may go; idle otherwise. Runs in a daemon thread; set the
    returned event to stop it."""
    stop = _Stop()

    def run():
        while not stop.is_set():
            ACTIVITY.wait()
            ACTIVITY.clear()
            pause = period
            while not stop.wait(pause):
                _, wait = _prune(cache_dir, keep, grace)
                if wait is None and not ACTIVITY.is_set():
                    break  # nothing left to wait for: sleep until the next request
                ACTIVITY.clear()
                # again after `period`, or as soon as the oldest entry spared may go
                pause = min(period, wait + 0.05) if wait is not None else period

    threading.Thread(target=run, name="ganpaint-cache-janitor", daemon=True).start()
    return stop
