"""Scene GAN training speed: training images per second (generator, pixel discriminator and
semantic discriminator, one full `Trainer.step`), for the recipe and the variants tried to
make CPU training cheaper. Prints images/s and the ratio to the recipe.

Each variant runs `--steps` timed steps after 2 warm-up steps, on one pre-rendered batch (the
renderer's own cost is printed separately: it runs beside training on the data side).
Usage: python bench/train_bench.py [--threads 2] [--steps 6] [--only recipe,bf16,...]
"""
import argparse
import time

import torch

from ganpaint.world.scenegan import CONFIG, Trainer
from ganpaint.world.scenes import SceneStream

THIN = dict(CONFIG, channels=[256, 256, 256, 256, 128, 96, 48, 24])  # fewer high-res channels
VARIANTS = {  # name: (batch size, Trainer keyword arguments, what to torch.compile)
    "recipe": (16, {}, False),
    "batch32": (32, {}, False),
    "bf16": (16, {"amp": True}, False),
    "sem-2-scales": (16, {"semantic_scales": (1, 2)}, False),
    "sem-8px-only": (16, {"semantic_scales": (2,)}, False),
    "no-semantic": (16, {"semantic": False}, False),
    "thin-highres": (16, {"config": THIN}, False),
    "locality": (16, {"locality": 1.0}, False),  # + the locality loss (train-gan --locality)
    "compile-g": (16, {}, "g"),
    "compile-all": (16, {}, "all"),
}


def measure(batch, kwargs, compiled, steps):
    tr = Trainer(batch_size=batch, **kwargs)
    if compiled:
        tr.g.forward = torch.compile(tr.g.forward)
    if compiled == "all":
        for disc, _ in tr.discs:
            disc.forward = torch.compile(disc.forward)
    real, _ = next(SceneStream(64, batch))
    for s in range(2):
        tr.step(real, s)
    t = time.perf_counter()
    for s in range(steps):
        tr.step(real, 2 + s)
    return batch * steps / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--only", default=None, help="comma-separated variant names")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    names = a.only.split(",") if a.only else list(VARIANTS)
    t = time.perf_counter()
    next(SceneStream(64, 64))
    print(f"renderer: {64 / (time.perf_counter() - t):.0f} images/s on one core")
    base = None
    for name in names:
        batch, kwargs, compiled = VARIANTS[name]
        try:
            rate = measure(batch, kwargs, compiled, a.steps)
        except Exception as e:  # e.g. torch.compile without a working compiler
            print(f"{name:>14}: failed: {type(e).__name__}: {str(e).splitlines()[0][:100]}")
            continue
        base = base or (rate if name == "recipe" else None)
        ratio = f"   {rate / base:.2f}× recipe" if base else ""
        print(f"{name:>14}: {rate:6.1f} images/s (batch {batch}, {a.threads} threads){ratio}", flush=True)


if __name__ == "__main__":
    main()
