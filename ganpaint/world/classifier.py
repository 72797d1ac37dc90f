"""Scene categories of the scene world and a small VGG-style classifier for them.

The classifier is the subject of Network Dissection: the scene world's exact label maps make
a probe set (the role Broden plays for real networks). A category is read off a scene's label
map by rules a person would apply, in order: a visible dome makes a domed square; buildings
and a road a village street; buildings alone houses; many trees a forest; a road a farm road;
anything else an open field.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from ganpaint.core import checkpoint
from ganpaint.world.labels import INDEX

CATEGORIES = ["domed square", "village street", "houses", "forest", "farm road", "open field"]
DEFAULT_WEIGHTS = checkpoint.MODELS / "classifier.pt"
PROBE_SEED = 1_500_000_000  # probe images: held out from classifier and segmenter training


def category(labels: np.ndarray) -> int:
    """The scene category of one (H, W) label map."""
    f = np.bincount(np.asarray(labels).reshape(-1), minlength=len(INDEX)) / labels.size
    if f[INDEX["dome"]] > 0.004:
        return 0
    if f[INDEX["building"]] >= 0.08:  # buildings in front hide most of a road: 4 % is a street
        return 1 if f[INDEX["road"]] >= 0.04 else 2
    if f[INDEX["tree"]] >= 0.15:
        return 3
    return 4 if f[INDEX["road"]] >= 0.04 else 5


def _conv(cin, cout, pool):
    layers = [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=False)]
    return nn.Sequential(*layers, nn.MaxPool2d(2)) if pool else nn.Sequential(*layers)


class SceneCNN(nn.Sequential):
    """conv1 … conv5 (each conv → ReLU [→ max-pool]), global average pool, linear classifier.
    Hook `convK` to dissect a layer: its output is after the ReLU (and pooling)."""

    def __init__(self, classes=len(CATEGORIES), widths=(32, 64, 128, 128, 256)):
        pools = (True, True, True, False, False)
        layers, cin = OrderedDict(), 3
        for i, (w, p) in enumerate(zip(widths, pools), 1):
            layers[f"conv{i}"] = _conv(cin, w, p)
            cin = w
        layers["pool"] = nn.AdaptiveAvgPool2d(1)
        layers["flatten"] = nn.Flatten()
        layers["fc"] = nn.Linear(cin, classes)
        super().__init__(layers)
        self.widths = list(widths)


def load_cnn(path=DEFAULT_WEIGHTS, device="cpu") -> SceneCNN:
    """The scene-category CNN of a weights file written by `train` (safely; clear errors),
    with its `categories`. `registry.load_classifier(spec)` also resolves import paths."""
    state = checkpoint.load(path)
    try:
        net = SceneCNN(len(state["categories"]), state["widths"])
        net.load_state_dict(state["state_dict"])
    except (KeyError, RuntimeError, TypeError) as e:
        raise checkpoint.CheckpointError(f"{path}: not a ganpaint classifier file: {e}") from None
    net.categories = state["categories"]
    return net.to(device).eval()


load_classifier = load_cnn  # its old name, kept for callers; it is not registry's


def batch(seeds, size=64):
    """Rendered images in [-1, 1], their label maps and their categories, for seeds."""
    from ganpaint.world.scenes import render_batch, to_tensor_images
    images, labels = render_batch(seeds, size)
    cats = torch.tensor([category(l) for l in labels])
    return to_tensor_images(images), torch.from_numpy(labels).long(), cats


def train(out_dir="runs/classifier", export_to=DEFAULT_WEIGHTS, steps=1500, batch_size=32,
          lr=2e-3, device=None, log=print, save_every=100):
    """Train on renders (seeds from 0), resumable; light augmentation keeps it below perfect."""
    from ganpaint.world.augment import degrade
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out_dir = checkpoint.run_paths(out_dir, export_to)
    state_path = out_dir / "state.pt"
    torch.manual_seed(0)
    net = SceneCNN().to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4)
    step = checkpoint.resume(state_path, {"net": net, "opt": opt}, device, log)
    bar = tqdm(total=steps, initial=step, desc="train classifier", unit="step")
    while step < steps:
        x, _, y = batch(range(step * batch_size, (step + 1) * batch_size))
        x = degrade(x, torch.Generator().manual_seed(step), 0.7).to(device)
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss = F.cross_entropy(net(x), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % save_every == 0 or step == steps:
            checkpoint.save({"net": net.state_dict(), "opt": opt.state_dict(), "step": step}, state_path)
    bar.close()
    acc = accuracy(net.eval(), samples=1000)
    checkpoint.save({"state_dict": {k: v.cpu() for k, v in net.state_dict().items()},
                     "categories": CATEGORIES, "widths": net.widths, "steps": steps,
                     "heldout_accuracy": acc["accuracy"]}, export_to)
    log(f"exported {export_to}: held-out accuracy {acc['accuracy']:.3f}")
    return net


@torch.no_grad()
def features(net, x, size=64):
    """Globally pooled conv5 features (N, 256) of images in [-1, 1], resized to the training
    size: a second judge of realism for eval-gan, one that no GAN discriminator has seen."""
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    for name, layer in net.named_children():
        if name == "fc":
            return x
        x = layer(x)


@torch.no_grad()
def predict(net, x):
    """Scene-category indices for images (N, 3, H, W), in batches, without gradients."""
    return net(x).argmax(1)


def accuracy(net, samples=1000, seed_start=PROBE_SEED + 10_000_000, batch_size=100):
    """Held-out accuracy, overall and balanced per category."""
    correct, per = 0, np.zeros((len(CATEGORIES), 2))
    for i in range(0, samples, batch_size):
        x, _, y = batch(range(seed_start + i, seed_start + min(samples, i + batch_size)))
        p = predict(net, x.to(next(net.parameters()).device)).cpu()
        correct += int((p == y).sum())
        for c in range(len(CATEGORIES)):
            m = y == c
            per[c] += (int((p[m] == c).sum()), int(m.sum()))
    return {"accuracy": correct / samples,
            "per_category": {c: (float(a / n) if n else None) for c, (a, n) in zip(CATEGORIES, per)}}
