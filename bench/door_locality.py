"""Can one painting-layer cell hold a door? A diagnostic of the generator, not of the engine.

Issue 17's door dab inserts 10 door units in one cell at a wall's foot. When it fails, this
script says whether the units or the generator are to blame, on the first `--scenes` wall-foot
cells of the experiments' seed (the dab's cells):

- transplants of a real door's features from another scene (the door's cell with all its
  units; the cell and the one above; its 3×3 neighbourhood): if only the 3×3 one draws a door,
  the generator spreads a door over the neighbouring cells, and no choice of units or levels in
  one cell can draw one;
- "draw door" strokes of 1×1, 2×1 (the cell and the one above) and 2×2 cells, hard-edged, with
  10 and 20 units of the dissection's drawing ranking at the default level; and the 1×1 dab
  with the app's soft edge (its effect at `FEATHER` in the 8 cells around): what a person gets.

A success is ≥ 24 door pixels gained around the edit (issue 17's measure, in its 3×3 cells
grown by the row above and the column to the right, which the larger edits also touch).
Usage: python bench/door_locality.py [--dissection models/dissection] [--scenes 50]"""
import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ganpaint.apps import registry  # noqa: E402
from ganpaint.apps.experiments import EXPERIMENT_SEED, _wall_foot  # noqa: E402
from ganpaint.core.intervene import FEATHER, Painter, cell_shares  # noqa: E402
from ganpaint.core.names import lookup  # noqa: E402

DONOR_SEED = 7  # scenes the transplanted doors come from: apart from the dabs' scenes
MIN_GAIN = 24


def scenes(painter, segmenter, seed, n):
    """Latents, painting-layer features, labels and per-cell concept shares of n scenes."""
    g = painter.generator
    z = g.latents(range(n), seed)
    f = torch.cat([painter.features(z[i:i + 50]) for i in range(0, n, 50)])
    labels = torch.cat([segmenter.segment(g.forward_from(painter.layer, f[i:i + 50]))
                        for i in range(0, n, 50)])
    return z, f, labels, cell_shares(labels, len(segmenter.concepts), f.shape[2:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dissection", default=None, help="default: the shipped one")
    ap.add_argument("--scenes", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from ganpaint.core.checkpoint import MODELS
    d = registry.load_dissection(a.dissection or MODELS / "dissection")
    g = registry.load_generator(d.get("model", "scenes"))
    seg = registry.load_segmenter(d.get("segmenter", "scenes"))
    p = Painter(g, d)
    if not g.can_split(p.layer):
        sys.exit(f"{p.layer}: this generator cannot be rerun from its painting layer")
    B, D = lookup("building", seg.concepts), lookup("door", seg.concepts)
    ground = [lookup(n, seg.concepts) for n in ("grass", "road")]
    _, fd, _, shd = scenes(p, seg, DONOR_SEED, 300)
    h, w = fd.shape[2:]
    donors = [(i, y, x) for i in range(len(fd)) for y in range(1, h - 1) for x in range(1, w - 1)
              if shd[i, D, y, x] >= 0.4]
    z, f, lab, sh = scenes(p, seg, EXPERIMENT_SEED, 6 * a.scenes)
    sites = [(i, c) for i in range(len(z)) if (c := _wall_foot(sh[i], B, D, ground)) is not None
             and 1 <= c[0] < h - 1 and 1 <= c[1] < w - 1][:a.scenes]
    ch, cw = lab.shape[-2] // h, lab.shape[-1] // w
    rng = np.random.RandomState(0)
    gains = {}
    for i, (y, x) in sites:
        win = (slice((y - 2) * ch if y > 1 else 0, (y + 2) * ch), slice((x - 1) * cw, (x + 3) * cw))
        base = int((lab[i][win] == D).sum())
        j, dy, dx = donors[rng.randint(len(donors))]
        for name, (top, right) in {"1x1": (0, 1), "2x1": (1, 1), "3x3": (1, 2)}.items():
            left = 1 if name == "3x3" else 0
            edited = f[i:i + 1].clone()
            edited[..., y - top:y + 1 + (name == "3x3"), x - left:x + right] = \
                fd[j:j + 1, :, dy - top:dy + 1 + (name == "3x3"), dx - left:dx + right]
            out = seg.segment(g.forward_from(p.layer, edited))[0]
            gains.setdefault(f"transplant {name}, all units", []).append(int((out[win] == D).sum()) - base)
        for name, (top, right), edge in (("1x1", (0, 1), 0.0), ("2x1", (1, 1), 0.0), ("2x2", (1, 2), 0.0),
                                         (f"1x1 edge {FEATHER}", (0, 1), FEATHER)):
            m = torch.zeros(h, w)
            m[y - top:y + 1, x:x + right] = 1
            for k in (10, 20):
                out = seg.segment(p.render(z[i:i + 1], [p.stroke("door", m, "draw", k, feather=edge)]))[0]
                gains.setdefault(f"draw stroke {name}, {k} units", []).append(int((out[win] == D).sum()) - base)
    print(f"{len(sites)} wall-foot cells ({d.get('model')}, {p.layer}; {len(donors)} donor door cells); "
          f"success = ≥ {MIN_GAIN} door px gained around the edit")
    for name, v in gains.items():
        v = np.array(v)
        print(f"  {name:28s} success {np.mean(v >= MIN_GAIN):.2f}   median gain {np.median(v):5.1f} px")


if __name__ == "__main__":
    main()
