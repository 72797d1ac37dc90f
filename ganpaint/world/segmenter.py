"""The small U-Net segmenter shipped for the scene world.

It implements the `Segmenter` protocol of `ganpaint.core.sources` (concept names, label maps,
and the optional probabilities and features), so any other segmenter plugs in the same way.
"""
from __future__ import annotations


import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ganpaint.core import checkpoint
from ganpaint.core.sources import Segmenter
from ganpaint.world.labels import ALIASES, CONCEPTS

DEFAULT_WEIGHTS = checkpoint.MODELS / "segmenter.pt"


def _block(cin, cout):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """A small U-Net: three poolings, skip connections, one logit map per concept."""

    def __init__(self, classes: int, width: int = 24):
        super().__init__()
        w = [width, width * 2, width * 4, width * 6]
        self.enc1, self.enc2, self.enc3 = _block(3, w[0]), _block(w[0], w[1]), _block(w[1], w[2])
        self.bottom = _block(w[2], w[3])
        self.dec3, self.dec2 = _block(w[3] + w[2], w[2]), _block(w[2] + w[1], w[1])
        self.dec1 = _block(w[1] + w[0], w[0])
        self.head = nn.Conv2d(w[0], classes, 1)

    def forward(self, x, return_features=False):
        """Per-concept logits (N, C, H, W) for images (N, 3, H, W)."""
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        b = self.bottom(F.max_pool2d(e3, 2))
        up = lambda t: F.interpolate(t, scale_factor=2, mode="nearest")
        d3 = self.dec3(torch.cat([up(b), e3], 1))
        d2 = self.dec2(torch.cat([up(d3), e2], 1))
        d1 = self.dec1(torch.cat([up(d2), e1], 1))
        logits = self.head(d1)
        return (logits, b) if return_features else logits


class UNetSegmenter(Segmenter):
    """The shipped segmenter: a U-Net run at its native resolution (inputs are resized to it)."""

    def __init__(self, net: UNet, concepts: list[str], resolution: int, device="cpu"):
        self.net = net.to(device).eval()
        self.concepts, self.resolution, self.device = list(concepts), int(resolution), device
        self.aliases = {a: c for a, c in ALIASES.items() if c in self.concepts}  # "trees" → "tree"

    def _prepare(self, images):
        x = images.to(self.device, torch.float32)
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear",
                              align_corners=False, antialias=True)
        return x

    def logits(self, images, size=None, grad=False):
        """Logits at the U-Net's resolution for images of any size (resized to it)."""
        with torch.set_grad_enabled(grad):
            out = self.net(self._prepare(images))
            size = size or images.shape[-1]
            if out.shape[-1] != size:
                out = F.interpolate(out, size=(size, size), mode="bilinear", align_corners=False)
        return out

    def probabilities(self, images, size=None, grad=False):
        """Softmax probabilities, resized to `size` (default: the images'); `grad`
        keeps the graph (causal rankings learn through it)."""
        return self.logits(images, size, grad).softmax(1)

    def segment(self, images, size=None):
        """Label maps (N, size, size): the most probable concept per pixel."""
        return self.logits(images, size).argmax(1)

    @torch.no_grad()
    def features(self, images):
        """Deepest features, spatially averaged: (N, D). Used for the Fréchet distance."""
        _, b = self.net(self._prepare(images), return_features=True)
        return b.mean((2, 3))


def export(net: UNet, path, resolution: int, extra: dict | None = None):
    """Write the U-Net's weights with its concepts and resolution (atomically)."""
    state = {"state_dict": net.state_dict(), "concepts": list(CONCEPTS),
             "resolution": int(resolution), "width": net.enc1[0].out_channels}
    state.update(extra or {})
    checkpoint.save(state, path)


def load_unet(path=DEFAULT_WEIGHTS, device="cpu") -> UNetSegmenter:
    """The U-Net segmenter of a weights file written by `export` (safely; clear errors).
    `registry.load_segmenter(spec)` also resolves ids and import paths to any `Segmenter`."""
    state = checkpoint.load(path)
    try:
        net = UNet(len(state["concepts"]), width=int(state["width"]))
        net.load_state_dict(state["state_dict"])
    except (KeyError, RuntimeError, TypeError) as e:
        raise checkpoint.CheckpointError(f"{path}: not a ganpaint segmenter file: {e}") from None
    return UNetSegmenter(net, state["concepts"], state["resolution"], device)


load_segmenter = load_unet  # its old name, kept for callers; it is not registry's


def confusion(pred: torch.Tensor, target: torch.Tensor, classes: int) -> np.ndarray:
    """Confusion counts (target rows, predicted columns)."""
    idx = target.reshape(-1).long() * classes + pred.reshape(-1).long()
    return torch.bincount(idx, minlength=classes * classes).reshape(classes, classes).numpy()


def scores(conf: np.ndarray, concepts: list[str]) -> dict:
    """Pixel accuracy, mean IoU and per-concept IoU from confusion counts."""
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    present = union > 0
    return {"pixel_accuracy": float(tp.sum() / max(conf.sum(), 1)),
            "mean_iou": float(np.nanmean(iou[present])),
            "iou": {c: float(v) for c, v, p in zip(concepts, iou, present) if p}}


def evaluate(segmenter: Segmenter, samples=500, seed=None, size=64, batch_size=50,
             progress=False) -> dict:
    """Score a segmenter on held-out renders (seeds ≥ HELDOUT_SEED, never trained on)."""
    from tqdm import tqdm

    from ganpaint.world.scenes import HELDOUT_SEED, render_batch, to_tensor_images
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    start = HELDOUT_SEED + (0 if seed is None else int(seed))
    k = len(segmenter.concepts)
    conf = np.zeros((k, k), np.int64)
    for i in tqdm(range(0, samples, batch_size), disable=not progress, desc="eval-segmenter"):
        n = min(batch_size, samples - i)
        images, labels = render_batch(range(start + i, start + i + n), size)
        pred = segmenter.segment(to_tensor_images(images), size)
        conf += confusion(pred.cpu(), torch.from_numpy(labels), k)
    return scores(conf, segmenter.concepts)
