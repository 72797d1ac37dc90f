"""Dissection cost vs just running generator + segmenter, and peak memory vs sample count.

For the shipped scene GAN (layer4), the shipped scene classifier (conv5, on probe renders) and a
randomly initialised ProGAN-256-shaped generator (layer4: 512 units at 8×8), each at the top
quantile `ganpaint dissect` uses for it by default (0.01 for generators, 0.005 for classifiers). Each measurement runs in a fresh process (peak RSS is per process).
Targets: time ratio ≤ 1.2; peak memory at 4× the samples within 10% of 1×.
Times are the fastest of --repeat runs (this is a shared 2-core VM: single runs vary by ±15%, and
the models alone ran at 19–25 ms/sample for the same scenes in different processes). So each
dissection run also times its own calls into the models, and prints total / that time: the same
ratio, free of the noise between processes.
Usage: python bench/dissect_bench.py [--samples 1000] [--progan-samples 16] [--repeat 3]
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = r"""
import json, resource, sys, tempfile, time, torch
from ganpaint.apps import registry
from ganpaint.core.dissect import dissect
from ganpaint.core.sources import GeneratorSource
model, layer, samples, batch, mode, seg_size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
if model.startswith("classifier:"):
    from ganpaint.world.probe import ProbeSource
    src = ProbeSource(registry.load_classifier(model[len("classifier:"):]), model)
else:
    g = registry.load_generator(model)
    src = GeneratorSource(g, registry.load_segmenter("scenes"), 0, seg_size or None)
src.batch([0], [layer])  # warm up
t = time.perf_counter()
if mode == "models":
    for i in range(0, samples, batch):
        src.batch(list(range(i, min(samples, i + batch))), [layer])
else:  # time spent inside the models too: the same run's own baseline
    inner, run_models = [0.0], src.batch
    def timed(*a):
        t0 = time.perf_counter()
        out = run_models(*a)
        inner[0] += time.perf_counter() - t0
        return out
    src.batch = timed
    dissect(src, [layer], tempfile.mkdtemp(), samples, batch_size=batch, progress=False, log=lambda *a: None)
dt = time.perf_counter() - t
print(json.dumps({"seconds_per_sample": dt / samples, "in_run_ratio": dt / inner[0] if mode != "models" else 1.0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "quantile": src.quantile}))
"""


def child(*args):
    out = subprocess.run([sys.executable, "-c", CHILD, *map(str, args)], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def fastest(runs):
    return min(runs, key=lambda r: r["seconds_per_sample"])


def bench(name, model, layer, samples, batch, seg_size=0, repeat=1):
    base, full = [], []
    for _ in range(repeat):  # interleaved, so a slow spell of the machine hits both
        base.append(child(model, layer, samples, batch, "models", seg_size))
        full.append(child(model, layer, samples, batch, "dissect", seg_size))
    base, full = fastest(base), fastest(full)
    big = child(model, layer, 4 * samples, batch, "dissect", seg_size)
    ratio = full["seconds_per_sample"] / base["seconds_per_sample"]
    growth = big["peak_rss_mb"] / full["peak_rss_mb"] - 1
    print(f"{name} (q = {full['quantile']}, the default): models {base['seconds_per_sample'] * 1000:.1f} ms/sample, "
          f"dissection {full['seconds_per_sample'] * 1000:.1f} ms/sample, ratio {ratio:.2f} (target ≤ 1.2); "
          f"within the dissection run, total / time in the models: {full['in_run_ratio']:.2f}")
    print(f"{name}: peak memory {full['peak_rss_mb']:.0f} MB at {samples} samples, "
          f"{big['peak_rss_mb']:.0f} MB at {4 * samples} ({growth * 100:+.1f}%, target within ±10%)")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--progan-samples", type=int, default=16)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    bench("scenes layer4", "scenes", "layer4", a.samples, 32, repeat=a.repeat)
    bench("scenes-cnn conv5 (probe renders + classifier)", "classifier:scenes-cnn", "conv5", a.samples, 32,
          repeat=a.repeat)
    import torch
    sys.path.insert(0, str(ROOT))
    from tests.test_progan import release_state_dict
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "random_progan256.pth"
        torch.save(release_state_dict(), path)
        bench("ProGAN-256 (random) layer4, labels at 256 px", f"progan:{path}", "layer4",
              a.progan_samples, 4, repeat=a.repeat)


if __name__ == "__main__":
    main()
