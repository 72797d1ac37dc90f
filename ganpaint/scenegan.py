"""The shipped scene GAN: a small ProGAN trained on rendered scenes, and its training loop.

Recipe: non-progressive training at full resolution; hinge loss; spectral norm and a
minibatch-stddev feature in the discriminator; Adam with β1 = 0; an exponential moving
average (EMA) of the generator weights is what ships. Resumable from `runs/gan/state.pt`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
import torch.nn as nn
import torch.nn.functional as F

from . import checkpoint
from .progan import ProGAN
from .scenes import SceneStream, to_uint8_images

MODELS = Path(__file__).resolve().parent.parent / "models"
DEFAULT_WEIGHTS = MODELS / "scenegan.pt"
# 64×64 output; layer4 (8×8, 256 units) is the painting layer.
CONFIG = {"z_dim": 128, "channels": [256, 256, 256, 256, 128, 128, 64, 32],
          "upsample": [False, False, True, False, True, False, True, True]}
PAINT_LAYER = "layer4"


def build_generator(config=None) -> ProGAN:
    return ProGAN(**(config or CONFIG))


def load_generator(path=DEFAULT_WEIGHTS, device="cpu") -> ProGAN:
    """Load a generator file written by `export` (safely; clear errors for bad files)."""
    state = checkpoint.load(path)
    try:
        g = build_generator(state["config"])
        g.load_state_dict(state["state_dict"])
    except (KeyError, RuntimeError, TypeError) as e:
        raise checkpoint.CheckpointError(f"{path}: not a ganpaint generator file: {e}") from None
    return g.to(device).eval()


def export(g: ProGAN, path, extra=None):
    state = {"config": g.config, "state_dict": {k: v.detach().cpu() for k, v in g.state_dict().items()}}
    state.update(extra or {})
    checkpoint.save(state, path)


class MinibatchStd(nn.Module):
    """Appends the batch's mean feature standard deviation: lets D see a lack of variety."""

    def forward(self, x):
        g = min(4, x.shape[0])
        y = x[: x.shape[0] // g * g].reshape(g, -1, *x.shape[1:])
        s = y.std(0, unbiased=False).mean((1, 2, 3))  # (N/g,)
        s = s.repeat(g)[:, None, None, None]
        s = torch.cat([s, s[: x.shape[0] - s.shape[0]]]) if s.shape[0] < x.shape[0] else s
        return torch.cat([x, s.expand(-1, 1, *x.shape[2:])], 1)


class Discriminator(nn.Module):
    def __init__(self, resolution=64, widths=(32, 64, 128, 256, 256)):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        layers = [sn(nn.Conv2d(3, widths[0], 1)), nn.LeakyReLU(0.2)]
        res, cin = resolution, widths[0]
        for w in widths[1:]:
            layers += [sn(nn.Conv2d(cin, w, 3, padding=1)), nn.LeakyReLU(0.2), nn.AvgPool2d(2)]
            cin, res = w, res // 2
        layers += [MinibatchStd(), sn(nn.Conv2d(cin + 1, cin, 3, padding=1)), nn.LeakyReLU(0.2),
                   nn.Flatten(), sn(nn.Linear(cin * res * res, 1))]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x).squeeze(1)


def sample_grid(g, n=64, seed=0, device="cpu") -> np.ndarray:
    """An 8-wide grid of samples (uint8 HxWx3) for the model card and for looking at."""
    z = torch.randn(n, g.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    with torch.no_grad():
        imgs = to_uint8_images(g(z))
    rows = [np.concatenate(list(imgs[i:i + 8]), 1) for i in range(0, n, 8)]
    return np.concatenate(rows, 0)


def train(out_dir="runs/gan", export_to=DEFAULT_WEIGHTS, steps=20000, batch_size=32,
          lr_g=1e-3, lr_d=1e-3, device=None, log=print):
    from PIL import Image
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out_dir = Path(out_dir)
    state_path = out_dir / "state.pt"
    torch.manual_seed(0)  # same initial weights every run: a resumed run equals an unbroken one
    g, d = build_generator().to(device), Discriminator().to(device)
    g_ema = build_generator().to(device).eval()
    g_ema.load_state_dict(g.state_dict())
    opt_g = torch.optim.Adam(g.parameters(), lr=lr_g, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(d.parameters(), lr=lr_d, betas=(0.0, 0.99))
    step = checkpoint.resume(state_path, {"g": g, "d": d, "g_ema": g_ema, "opt_g": opt_g,
                                          "opt_d": opt_d}, device, log)
    stream = SceneStream(g.resolution, batch_size, start=step * batch_size)
    bar = tqdm(total=steps, initial=step, desc=f"train {out_dir.name}", unit="step")
    while step < steps:
        real, _ = next(stream)
        real = real.to(device)
        gen = torch.Generator().manual_seed(step)
        z = torch.randn(2, batch_size, g.z_dim, generator=gen).to(device)
        # discriminator step (hinge)
        with torch.no_grad():
            fake = g(z[0])
        loss_d = F.relu(1 - d(real)).mean() + F.relu(1 + d(fake)).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        # generator step
        loss_g = -d(g(z[1])).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        step += 1
        beta = min(0.998, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(g_ema.parameters(), g.parameters()):
                pe.lerp_(p, 1 - beta)
        bar.update(1)
        if step % 25 == 0:
            bar.set_postfix(loss_d=f"{loss_d.item():.3f}", loss_g=f"{loss_g.item():.3f}")
        if step % 100 == 0 or step == steps:
            checkpoint.save({"g": g.state_dict(), "d": d.state_dict(), "g_ema": g_ema.state_dict(),
                             "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                             "step": step}, state_path)
        if step % 500 == 0 or step == steps:
            export(g_ema, export_to, {"steps": step, "batch_size": batch_size})
            Image.fromarray(sample_grid(g_ema, device=device)).save(out_dir / f"samples_{step:06d}.png")
            bar.write(f"exported {export_to} at step {step}")
    bar.close()
    return g_ema
