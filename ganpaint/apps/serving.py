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
import logging
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
        try:  # a folder's age is its newest file's: Gradio re-touches a file it sends again
            files = [f.stat().st_mtime for f in e.iterdir()] if e.is_dir() else []
            entries.append((max([e.stat().st_mtime, *files]), e, max(1, len(files))))
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
    """Delete the oldest entries of Gradio's cache folder beyond the newest holding `keep`
    files, sparing any modified in the last `grace` seconds. Safe for the canvas: the server
    never reads a scene it sent back (see `ganpaint.apps.components`). Returns how many
    entries were deleted."""
    return _prune(cache_dir, keep, grace)[0]


_JANITORS: set = set()  # the running janitors, woken by `touch`


def touch() -> None:
    """Tell the janitors a request came in (new cache entries may follow)."""
    for j in list(_JANITORS):
        j.wake.set()


class Janitor:
    """Prunes a cache folder every `period` seconds while requests come in (`touch`), and
    until the entries spared for their youth are gone, each as soon as it may go; sleeps
    otherwise. Runs in a daemon thread until `stop`."""

    def __init__(self, cache_dir, period: float = 2.0, keep: int = CACHE_KEEP,
                 grace: float = CACHE_GRACE):
        self.cache_dir, self.period, self.keep, self.grace = cache_dir, period, keep, grace
        self.wake, self.stopped = threading.Event(), threading.Event()
        self.passes = 0  # prune passes made (tests watch it)
        _JANITORS.add(self)
        self.thread = threading.Thread(target=self.run, name="ganpaint-cache-janitor", daemon=True)
        self.thread.start()

    def stop(self):
        """Stop the thread (woken to see it) and wait for it to end."""
        self.stopped.set()
        self.wake.set()
        _JANITORS.discard(self)
        self.thread.join()

    def prune(self) -> float | None:
        """One pass; how long until the oldest entry spared may go (None: none spared). A
        failing pass is logged, and the janitor carries on."""
        self.passes += 1
        try:
            return _prune(self.cache_dir, self.keep, self.grace)[1]
        except Exception:  # noqa: BLE001 (a janitor that dies would let the cache grow)
            logging.getLogger("ganpaint").exception("cache janitor: pruning %s failed",
                                                    self.cache_dir)
            return None

    def run(self):
        """The janitor's thread: asleep until a request, then passes until nothing is left."""
        while not self.stopped.is_set():
            self.wake.wait()
            self.wake.clear()
            pause = self.period
            while not self.stopped.wait(pause):
                wait = self.prune()
                if wait is None and not self.wake.is_set():
                    break  # nothing left to wait for: sleep until the next request
                self.wake.clear()
                # again after `period`, or as soon as the oldest entry spared may go
                pause = min(self.period, wait + 0.05) if wait is not None else self.period
