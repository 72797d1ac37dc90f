"""An encoder for GAN inversion: image → z (and the painting layer's features), and its training.

Optimisation from random latents is slow to find the right scene layout; an encoder trained on
the generator's own samples gives a start that is already close (GANPaint Studio's recipe). It
is trained with a latent loss (predicted z against the z that drew the image) plus a
feature-matching loss at the painting layer, whose features are what painting edits and what
inversion then optimises. Training is resumable from `<out>/state.pt`; the exported file is
data only (`checkpoint.load`, weights_only) and small (about 5 MB for the scene GAN).
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ganpaint.core import checkpoint

DEFAULT_WEIGHTS = checkpoint.MODELS / "encoder.pt"


def _down(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.2))


class Encoder(nn.Module):
    """Images (N, 3, R, R) in [-1, 1] → z (N, z_dim), or (z, features (N, U, h, w)) when
    `feature_shape` = (U, h, w) is given. Stride-2 blocks halve the image down to 4×4; the
    features come from the block at the painting layer's grid, z from the last one."""

    def __init__(self, z_dim: int, resolution: int, feature_shape=None, width: int = 32,
                 max_width: int = 128):
        super().__init__()
        if resolution < 8 or resolution & (resolution - 1):
            raise ValueError(f"encoder resolution must be a power of two ≥ 8, not {resolution}")
        self.config = {"z_dim": int(z_dim), "resolution": int(resolution),
                       "feature_shape": list(feature_shape) if feature_shape else None,
                       "width": int(width), "max_width": int(max_width)}
        blocks, cin, res, self.feature_block = [], 3, resolution, None
        while res > 4:
            cout = min(width * 2 ** len(blocks), max_width)
            blocks.append(_down(cin, cout))
            cin, res = cout, res // 2
            if feature_shape and res == feature_shape[1]:
                self.feature_block, feature_in = len(blocks) - 1, cout
        self.blocks = nn.ModuleList(blocks)
        self.to_z = nn.Linear(cin * 16, z_dim)
        self.to_features = None
        if feature_shape:
            if self.feature_block is None:
                raise ValueError(f"painting-layer grid {feature_shape[1]}×{feature_shape[2]} is not "
                                 f"one of the encoder's scales ({resolution} halved down to 4)")
            self.to_features = nn.Conv2d(feature_in, feature_shape[0], 3, padding=1)

    def forward(self, x):
        """(z (N, z_dim), painting-layer features (N, C, h, w)) estimated from images."""
        feats = None
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.feature_block:
                feats = self.to_features(x)
        z = self.to_z(x.flatten(1))
        return z if self.to_features is None else (z, feats)


def build_encoder(generator, layer=None, width=32, features=True) -> Encoder:
    """An untrained encoder shaped for `generator` (and its painting layer's features)."""
    layer = layer or generator.paint_layer
    with torch.no_grad():
        img, out = generator.run(generator.latents([0]), [layer] if features else [])
    if img.shape[-1] != img.shape[-2]:
        raise ValueError(f"{generator.name} draws non-square images: no encoder for it")
    shape = tuple(out[layer].shape[1:]) if features else None
    return Encoder(generator.z_dim, img.shape[-1], shape, width).to(generator.device)


def weights_fingerprint(generator) -> str:
    """A short hash of the generator's weights: an encoder trained for other weights (the model
    retrained since, under the same name) predicts the wrong latents and features."""
    h = hashlib.sha256()
    for k, v in sorted(generator.model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def losses(encoder, images, z, features=None, feature_weight=1.0):
    """(total, z loss, feature loss): MSE on z, plus the painting layer's features' MSE divided
    by their mean square (so the weight means the same for any layer)."""
    pred = encoder(images)
    zp, fp = pred if isinstance(pred, tuple) else (pred, None)
    lz = F.mse_loss(zp, z)
    lf = images.new_zeros(())
    if fp is not None and features is not None:
        lf = F.mse_loss(fp, features) / features.pow(2).mean().clamp_min(1e-8)
    return lz + feature_weight * lf, lz, lf


def batch(generator, layer, step, batch_size, seed):
    """The generated training batch of `step` (the same whatever run it is in: resumable)."""
    z = generator.latents(range(step * batch_size, (step + 1) * batch_size), seed=seed)
    images, out = generator.run(z, [layer])
    return images, z, out[layer]


def train_encoder(generator, out_dir="runs/encoder", export_to=DEFAULT_WEIGHTS, steps=20000,
                  batch_size=32, lr=1e-3, feature_weight=1.0, layer=None, width=32, seed=7,
                  save_every=100, export_every=500, log=print, progress=True) -> tuple:
    """Train (or resume) an encoder on `generator`'s samples; returns (encoder, loss history).

    State (encoder, optimiser, step, losses) is saved atomically to `<out_dir>/state.pt` every
    `save_every` steps; running again resumes there, with the same data (the batch of step k is
    fixed by `seed`). The encoder is exported to `export_to` every `export_every` steps and at
    the end. `seed` 7 keeps the latents apart from the dissection's (seed 0)."""
    from tqdm import tqdm
    layer = layer or generator.paint_layer
    state_path = Path(out_dir) / "state.pt"
    torch.manual_seed(0)  # the same initial weights every run
    enc = build_encoder(generator, layer, width)
    opt = torch.optim.Adam(enc.parameters(), lr=lr, betas=(0.9, 0.99))
    history: list = []
    if state_path.exists():
        saved = checkpoint.load(state_path)
        if saved.get("config") != enc.config:
            raise ValueError(f"{state_path}: a run of a different encoder ({saved.get('config')}, "
                             f"now {enc.config}): use another out_dir or delete it")
        history = list(saved.get("losses", []))
    step = checkpoint.resume(state_path, {"encoder": enc, "opt": opt}, generator.device, log)
    history = history[:step]

    def save():
        checkpoint.save({"encoder": enc.state_dict(), "opt": opt.state_dict(), "step": step,
                         "config": enc.config, "losses": history}, state_path)

    fingerprint = weights_fingerprint(generator)
    bar = tqdm(total=steps, initial=step, desc="train encoder", unit="step", disable=not progress)
    enc.train()
    while step < steps:
        for group in opt.param_groups:  # cosine decay over the whole run (resumes the same)
            group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        images, z, feats = batch(generator, layer, step, batch_size, seed)
        loss, lz, lf = losses(enc, images, z, feats, feature_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        history.append(float(loss.detach()))
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}", z=f"{lz.item():.4f}", feat=f"{lf.item():.4f}")
        if step % save_every == 0 or step == steps:
            save()
        if export_to and (step % export_every == 0 or step == steps):
            export(enc, export_to, {"steps": step, "generator": generator.name, "layer": layer,
                                    "generator_weights": fingerprint})
    bar.close()
    return enc.eval(), history


def export(encoder: Encoder, path, extra=None):
    """Write the encoder's weights and the settings needed to rebuild it (atomically)."""
    state = {"config": encoder.config,
             "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()}}
    state.update(extra or {})
    checkpoint.save(state, path)


def load_encoder(path=DEFAULT_WEIGHTS, device="cpu", generator=None) -> Encoder:
    """Load an encoder file written by `export` (weights only); with `generator`, check that
    the encoder was trained for a model of that latent size and image size."""
    state = checkpoint.load(path)
    try:
        cfg = dict(state["config"])
        enc = Encoder(cfg["z_dim"], cfg["resolution"], cfg["feature_shape"], cfg["width"],
                      cfg.get("max_width", 128))
        enc.load_state_dict(state["state_dict"])
    except (KeyError, RuntimeError, TypeError, ValueError) as e:
        raise checkpoint.CheckpointError(f"{path}: not a ganpaint encoder file: {e}") from None
    if generator is not None and cfg["z_dim"] != generator.z_dim:
        raise ValueError(f"{path}: an encoder for z_dim {cfg['z_dim']}, but {generator.name} has "
                         f"z_dim {generator.z_dim}")
    if generator is not None and state.get("generator") not in (None, generator.name):
        raise ValueError(f"{path}: trained for model {state['generator']!r}, not {generator.name!r}")
    if generator is not None and state.get("generator_weights") not in (None, weights_fingerprint(generator)):
        raise ValueError(f"{path}: trained for other weights of {generator.name!r} (the model has "
                         f"changed since): retrain it with `ganpaint train-encoder`")
    return enc.to(device).eval()


def shipped_encoder(generator, device="cpu", log=None):
    """The shipped encoder (models/encoder.pt) when there is one and it fits `generator`, else
    None (inversion then starts from random latents); a misfit is skipped with a note to `log`."""
    if not DEFAULT_WEIGHTS.is_file():
        return None
    try:
        return load_encoder(DEFAULT_WEIGHTS, device, generator)
    except ValueError as e:
        if log is not None:
            log(f"not using the shipped encoder: {e}")
        return None
