"""Seconds to invert an image (issue 22's bar: ≤ 20 s per image on 2 CPU cores), split into its
phases, with the host's matrix-product speed beside it: the same code took 13.5 s an image on
one 2-core host and 22 s on another, so a timing means little without the host's figure.
Usage: python bench/invert_bench.py [--images 3] [--threads 2]"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ganpaint.apps import registry  # noqa: E402
from ganpaint.apps.encoder import shipped_encoder  # noqa: E402
from ganpaint.apps.invert import invert  # noqa: E402
from ganpaint.world.scenes import HELDOUT_SEED, render, to_tensor_images  # noqa: E402

PHASES = ("seconds_start", "seconds_z", "seconds_adapt", "seconds")


def host_gflops(n=1024, reps=20) -> float:
    """fp32 matrix-product speed of this host at the current thread count."""
    a = torch.randn(n, n)
    a @ a
    t = time.perf_counter()
    for _ in range(reps):
        a @ a
    return reps * 2 * n ** 3 / (time.perf_counter() - t) / 1e9


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    g, seg = registry.load_generator("scenes"), registry.load_segmenter("scenes")
    enc = shipped_encoder(g, "cpu", print)
    gflops = host_gflops()
    rows = []
    for i in range(a.images):
        image, _ = render(HELDOUT_SEED + i, 64)
        rows.append(invert(g, to_tensor_images(image[None]), encoder=enc, perceptual=seg).stats)
    mean = {k: statistics.mean(r[k] for r in rows) for k in PHASES}
    features = mean["seconds"] - mean["seconds_start"] - mean["seconds_z"] - mean["seconds_adapt"]
    print(f"host: {gflops:.0f} GFLOP/s (1024² fp32 products, {a.threads} threads)")
    print(f"invert, mean of {a.images} held-out renders: start {mean['seconds_start']:.1f} s, "
          f"z {mean['seconds_z']:.1f} s, features {features:.1f} s, adapt "
          f"{mean['seconds_adapt']:.1f} s; total {mean['seconds']:.1f} s "
          f"(PSNR {statistics.mean(r['psnr_adapted'] for r in rows):.1f} dB)")
    print(f"target ≤ 20 s: {'met' if mean['seconds'] <= 20 else 'NOT met'} "
          f"({mean['seconds'] / 20:.2f} of the budget); "
          f"{mean['seconds'] * gflops / 1000:.2f} s·TFLOP/s (time × host speed, comparable across hosts)")


if __name__ == "__main__":
    main()
