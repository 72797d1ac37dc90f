"""Progressive-GAN generator (Karras et al. 2018), layer for layer as in the GAN Dissection release.

The same class serves the released LSUN checkpoints (`from_state_dict` infers channels and
resolution) and the shipped scene GAN (a smaller configuration of the same blocks). Layers are
named `layer1 … layerN` and `output_RxR`, and `nn.Sequential` order lets a forward pass start
from cached features at any layer.

Block: pixel norm → [nearest 2× upsample] → conv without bias → weight scale (× gain/√fan_in,
plus bias `wscale.b`) → LeakyReLU 0.2. Output: pixel norm → 1×1 conv → weight scale.
"""
from __future__ import annotations

import math
import re
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F


class PixelNorm(nn.Module):
    """Each position's feature vector scaled to unit mean square (ProGAN's normalisation)."""
    def forward(self, x):
        """x (N, C, H, W) with every (n, h, w) vector normalised across channels."""
        return x / torch.sqrt(x.pow(2).mean(1, keepdim=True) + 1e-8)


class WScale(nn.Module):
    """Equalised learning rate: a fixed He-style multiplier on the conv output, plus a bias `b`."""

    def __init__(self, channels, gain, fan_in):
        super().__init__()
        self.scale = gain / math.sqrt(fan_in)
        self.b = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        """The conv output scaled by the fixed He multiplier, plus the bias."""
        return x * self.scale + self.b.view(1, -1, 1, 1)


class ConvBlock(nn.Module):
    """One ProGAN generator layer: pixel norm, optional 2× nearest upsampling, an equalised
    conv, leaky ReLU (none on the RGB output). Its output is what dissection hooks."""
    def __init__(self, cin, cout, kernel=3, padding=1, upsample=False, output=False):
        super().__init__()
        self.norm = PixelNorm()
        self.upsample = upsample
        self.output = output
        self.conv = nn.Conv2d(cin, cout, kernel, padding=padding, bias=False)
        gain = 1.0 if output else math.sqrt(2) / kernel
        # gain/√in_channels as in the release; with gain √2/k it equals He init √2/√(in·k²)
        self.wscale = WScale(cout, gain, cin)
        nn.init.normal_(self.conv.weight)

    def forward(self, x):
        """The layer's output features (N, cout, H', W')."""
        x = self.norm(x)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.wscale(self.conv(x))
        return x if self.output else F.leaky_relu(x, 0.2)


class ProGAN(nn.Sequential):
    """z (N, z_dim) → image (N, 3, R, R) in about [-1, 1].

    `channels[i]` is the width of layer i+1; `upsample[i]` whether layer i+1 doubles the
    resolution. layer1 is a 4×4 conv with padding 3 on z viewed as (N, z_dim, 1, 1).
    """

    def __init__(self, z_dim=512, channels=(512,) * 8 + (256, 256, 128, 128, 64, 64),
                 upsample=None):
        channels = list(channels)
        if upsample is None:  # the release's pattern: two blocks per resolution from 4×4 on
            upsample = [False, False] + [i % 2 == 0 for i in range(len(channels) - 2)]
        res = 4 * 2 ** sum(upsample)
        layers = OrderedDict()
        cin = z_dim
        for i, (c, up) in enumerate(zip(channels, upsample)):
            first = i == 0
            layers[f"layer{i + 1}"] = ConvBlock(cin, c, 4 if first else 3, 3 if first else 1, up)
            cin = c
        layers[f"output_{res}x{res}"] = ConvBlock(cin, 3, 1, 0, output=True)
        super().__init__(layers)
        self.z_dim, self.resolution = z_dim, res
        self.config = {"z_dim": z_dim, "channels": channels, "upsample": list(upsample)}

    def forward(self, z):
        """Images (N, 3, R, R) from z (N, z_dim) or (N, z_dim, 1, 1)."""
        return super().forward(z.view(z.shape[0], -1, 1, 1) if z.dim() == 2 else z)


_OLD_KEY = re.compile(r"^features\.(\d+)\.(.*)$")


def normalise_state_dict(sd: dict) -> dict:
    """Accept the release's variants: `{'state_dict': ...}` wrappers and old `features.i` keys."""
    if "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    out = OrderedDict()
    n_layers = sum(1 for k in sd if re.match(r"^(layer\d+|features\.\d+)\.conv\.weight$", k))
    res = 4 * 2 ** ((n_layers - 2) // 2)
    for k, v in sd.items():
        m = _OLD_KEY.match(k)
        if m:  # features.0 is layer1
            k = f"layer{int(m.group(1)) + 1}.{m.group(2)}"
        elif k.startswith("output."):
            k = f"output_{res}x{res}." + k[len("output."):]
        out[k] = v
    return out


def from_state_dict(sd: dict, source: str = "state dict") -> ProGAN:
    """Build a ProGAN whose shapes match `sd` and load it; mismatches name the first bad key."""
    if not isinstance(sd, dict) or not all(isinstance(k, str) for k in sd):
        what = "a dict with non-text keys" if isinstance(sd, dict) else f"a {type(sd).__name__}"
        raise ValueError(f"{source}: holds {what}, not a ProGAN state dict (a dict of layer "
                         f"names to tensors)")
    sd = normalise_state_dict(sd)
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{source}: key {bad[0]!r} holds a {type(sd[bad[0]]).__name__}, not a "
                         f"tensor: not a ProGAN state dict")
    idx = sorted(int(m.group(1)) for k in sd if (m := re.match(r"^layer(\d+)\.conv\.weight$", k)))
    if not idx or idx != list(range(1, len(idx) + 1)):
        raise ValueError(f"{source}: no ProGAN layers found (expected keys layer1.conv.weight, "
                         f"layer2.conv.weight, ...; got {list(sd)[:5]} ...)")
    w1 = sd["layer1.conv.weight"]
    channels = [sd[f"layer{i}.conv.weight"].shape[0] for i in idx]
    model = ProGAN(z_dim=w1.shape[1], channels=channels)
    expected = model.state_dict()
    for k, v in expected.items():
        if k not in sd:
            raise ValueError(f"{source}: missing key {k!r} (shape {tuple(v.shape)})")
        if tuple(sd[k].shape) != tuple(v.shape):
            raise ValueError(f"{source}: key {k!r} has shape {tuple(sd[k].shape)}, "
                             f"expected {tuple(v.shape)}")
    extra = [k for k in sd if k not in expected]
    if extra:
        raise ValueError(f"{source}: unexpected key {extra[0]!r}")
    model.load_state_dict(sd)
    return model
