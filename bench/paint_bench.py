"""Per-edit latency: cached suffix (rerun only the layers after the painting layer) vs a full
regeneration, median over 100 edits, one latent, on the CPU.
Targets: shipped model median ≤ 50 ms per edit (cached). Also a ProGAN-256-shaped random
generator at layer4. Usage: python bench/paint_bench.py [--edits 100] [--threads 2]"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ganpaint.apps import registry  # noqa: E402
from ganpaint.core.intervene import Stroke, apply_strokes  # noqa: E402


def bench(name, gen, layer, edits):
    z = gen.latents([0])
    _, out = gen.run(z, [layer], stop=True)
    units = out[layer].shape[1]
    feats = out[layer]
    grid = feats.shape[2:]

    def stroke(i):
        m = torch.zeros(*grid)
        m[i % grid[0], (3 * i) % grid[1]] = 1
        return [Stroke(list(range(i % 7, units, max(1, units // 20)))[:20], m, torch.full((20,), 3.0))]

    cached, full = [], []
    for i in range(edits):
        s = stroke(i)
        t = time.perf_counter()
        gen.forward_from(layer, apply_strokes(feats, s))
        cached.append(time.perf_counter() - t)
        t = time.perf_counter()
        gen.run(z, edit={layer: lambda x: apply_strokes(x, s)})
        full.append(time.perf_counter() - t)
    mc, mf = statistics.median(cached) * 1000, statistics.median(full) * 1000
    print(f"{name}: cached suffix {mc:.1f} ms, full regeneration {mf:.1f} ms per edit "
          f"(median of {edits}); speed-up {mf / mc:.1f}×")
    return mc


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--edits", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    mc = bench("scenes layer4", registry.load_generator("scenes"), "layer4", a.edits)
    print(f"scenes target ≤ 50 ms: {'met' if mc <= 50 else 'NOT met'} ({mc / 50:.2f} of the budget)")
    from tests.test_progan import release_state_dict
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "random_progan256.pth"
        torch.save(release_state_dict(), path)
        bench("ProGAN-256 (random) layer4", registry.load_generator(f"progan:{path}"), "layer4",
              max(5, a.edits // 10))


if __name__ == "__main__":
    main()
