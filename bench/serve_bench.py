"""Serve N people at once: start `app.py` on a free port, drive N concurrent gradio_client
sessions (load a seed, two strokes, undo), check every scene against the same edit done
in-process, and report latencies.

    python bench/serve_bench.py --sessions 16 --json

prints {"sessions", "requests", "errors", "mismatches", "p50", "p95", "max", "temp_files",
"temp_files_peak", "temp_files_after_exit", "load_avg", ...}: seconds per request as a client
sees it. `temp_files` is the number of files in the server's temp folders (its download PNGs
and Gradio's cache) after the run, once the server's janitor has had its grace period (replies
younger than CACHE_GRACE s are kept: they may still be fetched); `temp_files_peak` the number
when the last reply came; `temp_files_after_exit` once it has stopped (SIGTERM); `load_avg`
the 1-minute load average before and after. `server_cpu_s` / `client_cpu_s` are the CPU
seconds the server and this process (the N clients) used from the moment every client was
connected to the last reply, `wall_s` that stretch's duration (on a small machine the clients
share the server's cores), `max_by_call` the slowest of each session's requests, in order.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.toy import free_port, start_app  # noqa: E402
from ganpaint.apps.serving import CACHE_GRACE  # noqa: E402
CANVAS = 256
CALLS = ("new_scene", "paint 1", "paint 2", "undo")  # each session's requests, in order


def layer_png(path: Path, y0, y1, x0, x1) -> Path:
    a = np.zeros((CANVAS, CANVAS, 4), np.uint8)
    a[y0:y1, x0:x1] = (255, 48, 144, 255)
    Image.fromarray(a).save(path)
    return path


def plan(i: int):
    """Session i's seed and two strokes: (concept, action, strength, rectangle)."""
    c = CANVAS // 8
    r = i % 4
    return 100 + i, [("tree", "remove", "high (20 units)", (c * r, c * (r + 3), 0, c * 4)),
                     ("grass", "draw", "medium (10 units)", (c * 5, CANVAS, c * (r + 1), c * (r + 4)))]


def start(port: int, tmp: Path):
    """The app on `port`, its temp files under `tmp` (counted at the end)."""
    try:
        return start_app(port, {"GRADIO_TEMP_DIR": None, "TMPDIR": str(tmp)}, timeout=180)
    except RuntimeError as e:
        raise SystemExit(str(e)) from None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, ValueError, IndexError):
        return None


def session(i: int, url: str, tmp: Path, out: dict, go: threading.Barrier):
    from gradio_client import Client, handle_file
    seed, strokes = plan(i)
    times, images, errors = [], [], []
    try:
        # what a browser does on its own machine is done before the clock starts (the stroke
        # layers) or after the run (decoding the replies to check them)
        layers = [handle_file(str(layer_png(tmp / f"s{i}_{k}.png", y0, y1, x0, x1)))
                  for k, (_, _, _, (y0, y1, x0, x1)) in enumerate(strokes)]
        # fetch only the scene; plain http on localhost: without ssl_verify=False, httpx builds
        # an SSL context with the CA bundle on every call (~50 ms of CPU), on the server's cores
        client = Client(url, verbose=False, download_files=False, ssl_verify=False)
    except Exception as e:  # noqa: BLE001
        out[i] = {"times": [], "images": [], "errors": [f"setup: {e}"]}
        go.wait()
        return
    go.wait()

    def call(*args, api_name):
        t = time.perf_counter()
        try:
            res = client.predict(*args, api_name=api_name)
        except Exception as e:  # noqa: BLE001
            times.append(time.perf_counter() - t)
            errors.append(f"{api_name}: {e}")
            return None
        times.append(time.perf_counter() - t)
        scene = res[0]["background"]  # the brush canvas's scene (CANVAS px, lossless PNG)
        with urllib.request.urlopen(scene["url"], timeout=60) as f:
            images.append(f.read())
        return res
    res = call(seed, api_name="/new_scene")
    for (concept, action, strength, _), layer in zip(strokes, layers):
        if res is None:
            break
        # the server reads the stroke from the layers only (the scene comes from its own state)
        editor = {"background": None, "layers": [layer], "composite": None}
        res = call(editor, concept, action, strength, 1.0, api_name="/paint")
    if res is not None:
        call(api_name="/undo")
    out[i] = {"times": times, "images": images, "errors": errors}


def expected(i: int, app) -> list[np.ndarray]:
    """The same session's scenes, edited in-process (what every reply must show)."""
    seed, strokes = plan(i)
    outs = [app.new_scene(seed)]
    for concept, action, strength, (y0, y1, x0, x1) in strokes:
        a = np.zeros((CANVAS, CANVAS, 4), np.uint8)
        a[y0:y1, x0:x1] = (255, 48, 144, 255)
        outs.append(app.paint({**outs[-1][0], "layers": [a]}, outs[-1][1], concept, action,
                              strength, 1.0))
    outs.append(app.undo(outs[-1][1]))
    return [o[0]["background"] for o in outs]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sessions", type=int, default=16)
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    a = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    load0 = os.getloadavg()[0]
    proc, url = start(free_port(), tmp)
    try:
        out: dict = {}
        mark = {}  # the time, the server's and this process's CPU when every client is connected
        go = threading.Barrier(a.sessions, action=lambda: mark.update(
            t=time.perf_counter(), server=cpu_seconds(proc.pid), client=cpu_seconds(os.getpid())))
        threads = [threading.Thread(target=session, args=(i, url, tmp, out, go))
                   for i in range(a.sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # the server's files (its uploads included), not the stroke layers the clients wrote
        count = lambda: sum(1 for f in tmp.rglob("*") if f.is_file() and f.parent != tmp)  # noqa: E731
        peak = count()
        server_cpu = cpu_seconds(proc.pid)
        client_cpu = cpu_seconds(os.getpid())
        wall = time.perf_counter() - mark["t"]
        time.sleep(CACHE_GRACE + 3)  # the janitor runs every 2 s
        temp_files = count()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    after_exit = count()
    from ganpaint.apps import registry
    from ganpaint.core.dissection import Dissection
    from ganpaint.apps.paintapp import PaintApp
    d = Dissection.load(ROOT / "models" / "dissection")
    app = PaintApp(registry.generator_from_dissection(d, ROOT / "models" / "dissection" / "dissection.json"),
                   d, out_dir=tmp / "expected")
    times = sorted(t for r in out.values() for t in r["times"])
    errors = [e for r in out.values() for e in r["errors"]]
    mismatches = 0
    for i, r in out.items():
        want = expected(i, app)
        got = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in r["images"]]
        mismatches += sum(not np.array_equal(g, w) for g, w in zip(got, want))
        mismatches += max(0, len(want) - len(got)) if not r["errors"] else 0
    q = lambda f: round(times[min(len(times) - 1, int(f * len(times)))], 3) if times else None  # noqa: E731
    result = {"sessions": a.sessions, "requests": len(times), "errors": len(errors),
              "mismatches": mismatches, "p50": q(0.5), "p95": q(0.95),
              "max": round(times[-1], 3) if times else None, "temp_files": temp_files,
              "temp_files_peak": peak,
              "temp_files_after_exit": after_exit, "server_cpu_s": (round(server_cpu - mark["server"], 2) if server_cpu is not None else None),
              "client_cpu_s": (round(client_cpu - mark["client"], 2) if client_cpu is not None else None),
              "wall_s": round(wall, 2),
              "load_avg": [round(load0, 2), round(os.getloadavg()[0], 2)],
              "mean": round(statistics.fmean(times), 3) if times else None,
              "max_by_call": {name: round(max((r["times"][k] for r in out.values()
                                               if len(r["times"]) > k), default=0), 3)
                              for k, name in enumerate(CALLS)}}
    if errors:
        result["first_errors"] = errors[:3]
    if a.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:12} {v}")
    return 0 if not errors and not mismatches else 1


if __name__ == "__main__":
    raise SystemExit(main())
