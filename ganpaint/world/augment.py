"""Image degradations used in training, so models trained on crisp renders also work on the
slightly blurry, noisy, off-colour images a GAN makes. Batched torch ops, seeded generator."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each sample with its own sigma (pixels); sigma ≤ 0.05 leaves it almost unchanged."""
    n, c, h, w = x.shape
    radius = int(torch.ceil(3 * sigma.max()).clamp(min=1).item())
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t[None] / sigma.clamp(min=0.05)[:, None]) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n*c, taps)
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), k[:, None, None, :], groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


def degrade(x: torch.Tensor, gen: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Random colour jitter, blur, down-up resampling and noise on images in [-1, 1]."""
    n = x.shape[0]
    u = lambda *shape: torch.rand(*shape, generator=gen).to(x.device)
    gain = 1 + strength * 0.2 * (u(n, 1, 1, 1) * 2 - 1)
    tint = strength * 0.08 * (u(n, 3, 1, 1) * 2 - 1)
    shift = strength * 0.12 * (u(n, 1, 1, 1) * 2 - 1)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * gain + mean + shift + tint
    sigma = torch.where(u(n) < 0.6, 0.3 + 1.0 * strength * u(n), torch.zeros(n)).to(x.device)
    x = gaussian_blur(x, sigma)
    if u(1).item() < 0.25 * strength:
        h = x.shape[-1]
        x = F.interpolate(F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False,
                                        antialias=True), size=(h, h), mode="bilinear",
                          align_corners=False)
    noise = strength * 0.08 * u(n, 1, 1, 1) * torch.randn(x.shape, generator=gen).to(x.device)
    return (x + noise).clamp(-1, 1)
