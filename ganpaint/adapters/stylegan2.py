"""StyleGAN2 generator (Karras et al. 2020, "Analyzing and Improving the Image Quality of
StyleGAN"), loading checkpoints in the common PyTorch format of rosinality's stylegan2-pytorch
(which also holds NVIDIA's official weights after that project's conversion script).

Checkpoint: a dict with `g_ema` (the generator's state dict) and usually `latent_avg` (the mean
w, shape (style_dim,)); a training checkpoint also holds `g`, `d`, optimiser states and `args`
(an argparse.Namespace, which `load_file` allows and nothing else). A bare generator state dict
loads too. `from_checkpoint` infers the resolution, latent size (style_dim), mapping depth (n_mlp),
the channels per resolution and the channel multiplier from the keys' shapes, and refuses a missing
key or a wrong shape with the key's name and the shape it should have.

Architecture, and the format's keys each part reads (j = 0, 1, ... is the block doubling the
resolution to 8, 16, ...; `style_dim` = D):

- mapping z → w: pixel norm of z, then n_mlp equalised linear layers (learning-rate multiplier
  0.01, fused leaky ReLU): `style.{1..n_mlp}.weight` (D, D), `.bias` (D,).
- constant 4×4 input: `input.input` (1, C4, 4, 4).
- modulated 3×3 conv (`StyledConv`): style s = affine(w) (`*.conv.modulation.weight` (Cin, D),
  `.bias` (Cin,), initialised to 1), weight `*.conv.weight` (1, Cout, Cin, 3, 3) × 1/√(Cin·9),
  demodulated per output channel; upsampling convs are a stride-2 transposed conv followed by a
  [1,3,3,1] blur (upfirdn2d, kernel ×4, pad (1, 1)): `convs.{2j}.conv.blur.kernel` (4, 4).
  Then noise (`*.noise.weight` (1,), a learned scalar, times a per-layer noise image
  `noises.noise_{i}` (1, 1, R, R)), then the fused leaky ReLU: + bias `*.activate.bias` (Cout,),
  slope 0.2, × √2. The 4×4 conv is `conv1`; block j's are `convs.{2j}` (up) and `convs.{2j+1}`.
- ToRGB: a modulated 1×1 conv without demodulation (`to_rgb1` / `to_rgbs.{j}`: `conv.weight`
  (1, 3, C, 1, 1), `conv.modulation.*`, `bias` (1, 3, 1, 1)); outputs are summed over
  resolutions (skip architecture), the running image upsampled 2× by upfirdn2d with the blur
  (kernel ×4, pad (2, 1)): `to_rgbs.{j}.upsample.kernel` (4, 4).
- w is used by layer index as in the format: b4.conv w[0], b4.torgb w[1], then block j:
  conv0 w[2j+1], conv1 w[2j+2], torgb w[2j+3] (n_latent = 2·log2(size) − 2 entries; one w for
  all of them unless `synthesis` gets per-layer ws).

Layers (hookable, readable names; each outputs a plain (N, C, R, R) tensor after its activation):
`b4.conv`, `b4.torgb`, `b8.conv0`, `b8.conv1`, `b8.torgb`, `b16.conv0`, ... `layers(model)`
lists them with resolution and channels (a block `b{R}` outputs its last conv's features too;
`mapping` and `*.modulation` output (N, D) vectors, not feature maps). The default painting layer is `b8.conv1` (8×8, the
same position as the ProGAN adapter's `layer4`). `b{R}.torgb` outputs the running RGB image.

No split forward passes: every layer needs w (and the next ToRGB the running image), so the
model is not an nn.Sequential and `Generator.can_split` is False; painting uses one full, hooked
pass per render. The layers up to 16×16 cost a few % of a 256-px pass, so caching them would
save little.

Noise: by default each layer uses the checkpoint's fixed `noises.noise_{i}` image (seeded noise
when a checkpoint lacks them), so a latent gives the same image every time and in any batch.
`noise="zero"` switches noise off; `noise="latent"` draws each sample's noise from a seed taken
from its z (fixed per latent, different across latents).

Truncation (`truncation=psi`): w ← w_avg + psi·(w − w_avg) with the checkpoint's `latent_avg`;
if the checkpoint has none, w_avg is estimated as the mean of w over `mean_samples` (4096) z
drawn with seed 0, and `model.notes` says so.

Everything is plain PyTorch (upfirdn2d included): CPU and CUDA alike, no compiled ops.
"""
from __future__ import annotations

import argparse
import hashlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

BLUR = (1, 3, 3, 1)
SQRT2 = math.sqrt(2.0)
PAINT_LAYER = "b8.conv1"


def standard_channels(size: int, channel_multiplier: int = 2) -> dict:
    """{resolution: channels} of the format's default configuration, 4 … size."""
    wide = {64: 256, 128: 128, 256: 64, 512: 32, 1024: 16, 2048: 8}
    out, r = {}, 4
    while r <= size:
        out[r] = 512 if r <= 32 else wide[r] * channel_multiplier
        r *= 2
    return out


def blur_kernel(taps=BLUR, gain: float = 1.0) -> torch.Tensor:
    """Separable 2-D FIR kernel from 1-D taps, normalised to sum `gain`."""
    t = torch.tensor(taps, dtype=torch.float32)
    k = torch.outer(t, t)
    return k * (gain / k.sum())


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad=(0, 0)) -> torch.Tensor:
    """Upsample by zero insertion, pad (negative = crop), convolve with `kernel` (a true
    convolution: the kernel is flipped), keep every `down`-th sample. x: (N, C, H, W);
    `pad` = (before, after), the same on both axes."""
    n, c, h, w = x.shape
    if up > 1:  # each sample followed by up-1 zeros, on both axes
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    p0, p1 = pad
    x = F.pad(x, [p0, p1, p0, p1])
    kh, kw = kernel.shape
    weight = torch.flip(kernel, [0, 1]).to(x.dtype).reshape(1, 1, kh, kw).expand(c, 1, kh, kw)
    x = F.conv2d(x, weight, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor, slope: float = 0.2,
                     gain: float = SQRT2) -> torch.Tensor:
    """Add a per-channel bias (channel = dim 1), leaky ReLU, then scale by `gain`."""
    shape = [1, -1] + [1] * (x.dim() - 2)
    return F.leaky_relu(x + bias.reshape(shape), slope) * gain


class PixelNorm(nn.Module):
    """z scaled to unit mean square before the mapping network (as StyleGAN2 does)."""
    def forward(self, x):
        """x with each row normalised to unit mean square."""
        return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: weights stored as N(0, 1)/lr_mul and scaled
    at run time by lr_mul/√fan_in; bias stored /lr_mul (scaled by lr_mul at run time)."""

    def __init__(self, fan_in, fan_out, lr_mul=1.0, bias_init=0.0, activate=False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(fan_out, fan_in) / lr_mul)
        self.bias = nn.Parameter(torch.full((fan_out,), float(bias_init)))
        self.lr_mul, self.activate = lr_mul, activate
        self.gain = lr_mul / math.sqrt(fan_in)

    def forward(self, x):
        """The equalised-learning-rate linear layer (optionally leaky-ReLU activated)."""
        y = F.linear(x, self.weight * self.gain)
        b = self.bias * self.lr_mul
        return fused_leaky_relu(y, b) if self.activate else y + b


class Mapping(nn.Module):
    """z → w: pixel norm, then `n_mlp` layers `fc0 …` (lr_mul 0.01, fused leaky ReLU)."""

    def __init__(self, style_dim, n_mlp, lr_mul=0.01):
        super().__init__()
        self.norm = PixelNorm()
        self.n_mlp = n_mlp
        for i in range(n_mlp):
            self.add_module(f"fc{i}", EqualLinear(style_dim, style_dim, lr_mul, activate=True))

    def forward(self, z):
        """Style vectors w (N, w_dim) from latents z (N, z_dim)."""
        x = self.norm(z)
        for i in range(self.n_mlp):
            x = getattr(self, f"fc{i}")(x)
        return x


class ModulatedConv(nn.Module):
    """Weight (1, Cout, Cin, k, k) × 1/√(Cin·k²), modulated per sample by s = affine(w) and
    (optionally) demodulated to unit norm per output channel. Computed as: scale the input's
    channels by s, one shared convolution, scale the output's channels by the demodulation
    factors (equal to the per-sample-weight form, and no grouped convs)."""

    def __init__(self, cin, cout, kernel, style_dim, demodulate=True, upsample=False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, cout, cin, kernel, kernel))
        self.modulation = EqualLinear(style_dim, cin, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(cin * kernel * kernel)
        self.demodulate, self.upsample, self.padding = demodulate, upsample, kernel // 2
        if upsample:
            self.register_buffer("blur", blur_kernel(gain=4.0), persistent=False)

    def forward(self, x, w):
        """The conv with weights modulated by the style (and demodulated), one
        weight set per sample, run as a grouped conv."""
        s = self.modulation(w)                          # (N, Cin)
        weight = self.weight[0] * self.scale            # (Cout, Cin, k, k)
        x = x * s[:, :, None, None]
        if self.upsample:  # transposed conv, stride 2 (2H+1), then the blur back to 2H
            y = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
            y = upfirdn2d(y, self.blur, pad=(1, 1))
        else:
            y = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:  # 1/√(Σ_i,kh,kw (W·s_i)²) = 1/√(Σ_i s_i² Σ_kh,kw W²)
            energy = s.pow(2) @ weight.pow(2).sum((2, 3)).t()    # (N, Cout)
            y = y * torch.rsqrt(energy + 1e-8)[:, :, None, None]
        return y


class StyledConv(nn.Module):
    """A hookable synthesis layer: modulated conv → + noise_strength·noise → fused leaky ReLU
    (bias, slope 0.2, gain √2). Output (N, Cout, R, R)."""

    def __init__(self, cin, cout, style_dim, resolution, upsample=False):
        super().__init__()
        self.conv = ModulatedConv(cin, cout, 3, style_dim, upsample=upsample)
        self.noise_strength = nn.Parameter(torch.zeros(1))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))
        self.resolution, self.channels = resolution, cout

    def forward(self, x, w, noise=None):
        """Modulated conv, then the fixed noise and the biased leaky ReLU."""
        y = self.conv(x, w)
        y = y + self.noise_strength * (self.noise_const if noise is None else noise)
        return fused_leaky_relu(y, self.bias)


class ToRGB(nn.Module):
    """Modulated 1×1 conv to RGB (no demodulation) + bias, added to the running image upsampled
    with the blur. Output: the running image (N, 3, R, R)."""

    def __init__(self, cin, style_dim, resolution, upsample_skip=True):
        super().__init__()
        self.conv = ModulatedConv(cin, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.resolution, self.channels = resolution, 3
        if upsample_skip:
            self.register_buffer("up_kernel", blur_kernel(gain=4.0), persistent=False)

    def forward(self, x, w, skip=None):
        """This resolution's RGB (N, 3, R, R), added to the upsampled `skip` from below."""
        y = self.conv(x, w) + self.bias
        if skip is not None:
            y = y + upfirdn2d(skip, self.up_kernel, up=2, pad=(2, 1))
        return y


class FirstBlock(nn.Module):
    """4×4: constant input → `conv`; the model then runs `torgb`. Output: conv's features."""

    def __init__(self, channels, style_dim):
        super().__init__()
        self.const = nn.Parameter(torch.randn(1, channels, 4, 4))
        self.conv = StyledConv(channels, channels, style_dim, 4)
        self.torgb = ToRGB(channels, style_dim, 4, upsample_skip=False)

    def forward(self, batch, w, noise=None):
        """The 4×4 block: the learned constant, its styled conv and RGB output."""
        return self.conv(self.const.expand(batch, -1, -1, -1), w, noise)


class Block(nn.Module):
    """R×R (R ≥ 8): `conv0` (2× upsampling) → `conv1`; the model then runs `torgb` (which adds
    to the running image). Output: conv1's features, so hooking `b{R}` is hooking `b{R}.conv1`."""

    def __init__(self, cin, cout, style_dim, resolution):
        super().__init__()
        self.conv0 = StyledConv(cin, cout, style_dim, resolution, upsample=True)
        self.conv1 = StyledConv(cout, cout, style_dim, resolution)
        self.torgb = ToRGB(cout, style_dim, resolution)

    def forward(self, x, ws, noises):
        """ws: (N, 2, style_dim), the w of conv0 and conv1; noises: two (or None each)."""
        return self.conv1(self.conv0(x, ws[:, 0], noises[0]), ws[:, 1], noises[1])


NOISE_MODES = ("const", "zero", "latent")


class StyleGAN2(nn.Module):
    """z (N, style_dim) → images (N, 3, size, size) in about [-1, 1].

    `channels`: {resolution: channels} for 4 … size (default: the format's table for
    `channel_multiplier`). `truncation`: psi toward `w_avg` (None or 1: none).
    """

    def __init__(self, size=256, style_dim=512, n_mlp=8, channel_multiplier=2, channels=None,
                 lr_mlp=0.01, truncation=None, noise="const"):
        super().__init__()
        log = int(round(math.log2(size)))
        if size < 4 or 2 ** log != size:
            raise ValueError(f"StyleGAN2 size must be a power of two ≥ 4, got {size}")
        channels = dict(channels or standard_channels(size, channel_multiplier))
        missing = [4 * 2 ** i for i in range(log - 1) if 4 * 2 ** i not in channels]
        if missing:
            raise ValueError(f"channels: no width given for resolution(s) {missing}")
        self.size = self.resolution = size
        self.style_dim = self.z_dim = style_dim
        self.n_mlp, self.lr_mlp = n_mlp, lr_mlp
        self.channels = {r: int(channels[r]) for r in sorted(channels) if r <= size}
        self.channel_multiplier = channel_multiplier
        self.n_latent = 2 * log - 2
        self.mapping = Mapping(style_dim, n_mlp, lr_mlp)
        self.b4 = FirstBlock(self.channels[4], style_dim)
        self.block_resolutions = [2 ** k for k in range(3, log + 1)]
        for r in self.block_resolutions:
            self.add_module(f"b{r}", Block(self.channels[r // 2], self.channels[r], style_dim, r))
        self.register_buffer("w_avg", torch.zeros(style_dim), persistent=False)
        self.has_w_avg = False
        self.truncation = truncation
        self.noise = noise
        self.notes: list[str] = []
        self.paint_layer = PAINT_LAYER if size >= 8 else "b4.conv"
        self.preferred_layers = [n for n in ("b8.conv1", "b16.conv0", "b16.conv1", "b32.conv0")
                                 if n in dict(self.named_modules())] or ["b4.conv"]
        self.config = {"size": size, "style_dim": style_dim, "n_mlp": n_mlp,
                       "channel_multiplier": channel_multiplier, "channels": self.channels}

    # -- the synthesis layers, in order ------------------------------------------------------
    def styled_convs(self) -> list:
        """[(name, StyledConv)] in order; index i uses noise image `noises.noise_{i}`."""
        out = [("b4.conv", self.b4.conv)]
        for r in self.block_resolutions:
            block = getattr(self, f"b{r}")
            out += [(f"b{r}.conv0", block.conv0), (f"b{r}.conv1", block.conv1)]
        return out

    def mean_w(self, samples: int = 4096, seed: int = 0) -> torch.Tensor:
        """The mean of w over `samples` z drawn with a fixed seed (the truncation fallback)."""
        gen = torch.Generator().manual_seed(seed)
        total = torch.zeros(self.style_dim, dtype=torch.float64)
        dev = self.w_avg.device
        with torch.no_grad():
            for start in range(0, samples, 1024):
                z = torch.randn(min(1024, samples - start), self.style_dim, generator=gen)
                total += self.mapping(z.to(dev)).double().sum(0).cpu()
        return (total / samples).float()

    def truncate(self, w: torch.Tensor, psi=None) -> torch.Tensor:
        """w pulled toward the average style by `truncation` (1 = unchanged): fewer
        rare, broken samples at some cost in variety."""
        psi = self.truncation if psi is None else psi
        if psi is None or psi == 1:
            return w
        if not self.has_w_avg:
            raise ValueError("truncation needs the mean w (latent_avg): none is set")
        avg = self.w_avg.to(w.dtype)
        return avg + psi * (w - avg)

    def latent_noise(self, z: torch.Tensor) -> list:
        """Noise images per layer drawn from a seed that is a hash of each z row (mode
        'latent'): fixed per latent, independent of the batch."""
        per_layer = [[] for _ in self.styled_convs()]
        for row in z.detach().float().cpu():
            seed = int.from_bytes(hashlib.sha256(row.numpy().tobytes()).digest()[:8], "little")
            gen = torch.Generator().manual_seed(seed & (2 ** 63 - 1))
            for i, (_, layer) in enumerate(self.styled_convs()):
                r = layer.resolution
                per_layer[i].append(torch.randn(1, 1, r, r, generator=gen))
        return [torch.cat(n).to(z.device) for n in per_layer]

    def synthesis(self, w: torch.Tensor, noise=None) -> torch.Tensor:
        """w (N, style_dim), or per-layer ws (N, n_latent, style_dim) → images. `noise`: None
        (each layer's noise_const), "zero", or a list of per-layer noise images."""
        if w.dim() == 2:
            w = w[:, None].expand(-1, self.n_latent, -1)
        if w.dim() != 3 or w.shape[1:] != (self.n_latent, self.style_dim):
            raise ValueError(f"w must be (N, {self.style_dim}) or (N, {self.n_latent}, "
                             f"{self.style_dim}), got {tuple(w.shape)}")
        n_layers = len(self.styled_convs())
        if noise is None:
            noise = [None] * n_layers
        elif isinstance(noise, str) and noise == "zero":
            noise = [w.new_zeros(()) for _ in range(n_layers)]
        x = self.b4(w.shape[0], w[:, 0], noise[0])
        rgb = self.b4.torgb(x, w[:, 1])
        for j, r in enumerate(self.block_resolutions):
            block, i = getattr(self, f"b{r}"), 2 * j + 1
            x = block(x, w[:, i:i + 2], noise[i:i + 2])
            rgb = block.torgb(x, w[:, i + 2], rgb)
        return rgb

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, R, R) in about [-1, 1] from latents z (N, z_dim)."""
        if z.dim() == 4:  # (N, D, 1, 1), as some callers pass ProGAN-style latents
            z = z.flatten(1)
        w = self.truncate(self.mapping(z))
        if self.noise not in NOISE_MODES:
            raise ValueError(f"noise must be one of {NOISE_MODES}, got {self.noise!r}")
        noise = self.latent_noise(z) if self.noise == "latent" else (
            "zero" if self.noise == "zero" else None)
        return self.synthesis(w, noise)

    # -- the checkpoint format ---------------------------------------------------------------
    def format_names(self) -> dict:
        """{this module's state-dict key: the format's key}."""
        names = {}
        for i in range(self.n_mlp):
            for p in ("weight", "bias"):
                names[f"mapping.fc{i}.{p}"] = f"style.{i + 1}.{p}"
        names["b4.const"] = "input.input"

        def rgb(mine, theirs):
            for p in ("conv.weight", "conv.modulation.weight", "conv.modulation.bias", "bias"):
                names[f"{mine}.{p}"] = f"{theirs}.{p}"

        theirs = ["conv1"] + [f"convs.{k}" for k in range(2 * len(self.block_resolutions))]
        for i, ((mine, _), fmt) in enumerate(zip(self.styled_convs(), theirs)):
            for p in ("conv.weight", "conv.modulation.weight", "conv.modulation.bias"):
                names[f"{mine}.{p}"] = f"{fmt}.{p}"
            names[f"{mine}.noise_strength"] = f"{fmt}.noise.weight"
            names[f"{mine}.bias"] = f"{fmt}.activate.bias"
            names[f"{mine}.noise_const"] = f"noises.noise_{i}"
        rgb("b4.torgb", "to_rgb1")
        for j, r in enumerate(self.block_resolutions):
            rgb(f"b{r}.torgb", f"to_rgbs.{j}")
        return names

    def kernel_names(self) -> dict:
        """{this module's blur buffer: the format's key} (fixed [1,3,3,1] kernels ×4, (4, 4))."""
        names = {}
        for j, r in enumerate(self.block_resolutions):
            names[f"b{r}.conv0.conv.blur"] = f"convs.{2 * j}.conv.blur.kernel"
            names[f"b{r}.torgb.up_kernel"] = f"to_rgbs.{j}.upsample.kernel"
        return names

    def format_state_dict(self) -> dict:
        """This generator's weights under the format's key names (a `g_ema` state dict)."""
        own = self.state_dict()
        buffers = dict(self.named_buffers())
        out = {fmt: own[mine].detach().clone() for mine, fmt in self.format_names().items()}
        out.update({fmt: buffers[mine].detach().clone()
                    for mine, fmt in self.kernel_names().items()})
        return out

    def format_shapes(self) -> dict:
        """{format key: shape} for every key a checkpoint of this configuration holds."""
        return {k: tuple(v.shape) for k, v in self.format_state_dict().items()}


def layers(model: StyleGAN2) -> list[dict]:
    """The hookable feature layers in order: [{name, resolution, channels, kind}]."""
    out = []
    for name, module in model.named_modules():
        if isinstance(module, (StyledConv, ToRGB)):
            kind = "torgb" if isinstance(module, ToRGB) else (
                "conv (2× upsampling)" if module.conv.upsample else "conv")
            out.append({"name": name, "resolution": module.resolution,
                        "channels": module.channels, "kind": kind})
    return out


def describe_layers(model: StyleGAN2) -> str:
    """One line per layer, for `ganpaint models` / help texts."""
    lines = []
    for d in layers(model):
        mark = "  (default painting layer)" if d["name"] == model.paint_layer else ""
        lines.append(f"{d['name']:<12} {d['resolution']:>4}×{d['resolution']:<4} "
                     f"{d['channels']:>4} ch  {d['kind']}{mark}")
    return "\n".join(lines)


def layer_table(size=256, channel_multiplier=2, channels=None) -> list[dict]:
    """The same list as `layers` for a configuration, without building a model."""
    ch = dict(channels or standard_channels(size, channel_multiplier))
    out = [{"name": "b4.conv", "resolution": 4, "channels": ch[4], "kind": "conv"},
           {"name": "b4.torgb", "resolution": 4, "channels": 3, "kind": "torgb"}]
    r = 8
    while r <= size:
        out += [{"name": f"b{r}.conv0", "resolution": r, "channels": ch[r],
                 "kind": "conv (2× upsampling)"},
                {"name": f"b{r}.conv1", "resolution": r, "channels": ch[r], "kind": "conv"},
                {"name": f"b{r}.torgb", "resolution": r, "channels": 3, "kind": "torgb"}]
        r *= 2
    return out


# -- loading --------------------------------------------------------------------------------
def _shape(t) -> tuple:
    return tuple(t.shape)


def _unwrap(obj, source):
    """(generator state dict, latent_avg or None, notes) from a checkpoint object."""
    notes = []
    if not isinstance(obj, dict):
        raise ValueError(f"{source}: holds a {type(obj).__name__}, not a StyleGAN2 checkpoint "
                         f"(a dict with 'g_ema' and usually 'latent_avg')")
    latent_avg = obj.get("latent_avg") if isinstance(obj.get("latent_avg"), torch.Tensor) else None
    if "latent_avg" in obj and latent_avg is None:
        raise ValueError(f"{source}: 'latent_avg' holds a {type(obj['latent_avg']).__name__}, "
                         f"not a tensor")
    if isinstance(obj.get("g_ema"), dict):
        sd = obj["g_ema"]
    elif isinstance(obj.get("g"), dict):
        sd = obj["g"]
        notes.append("no 'g_ema' in the checkpoint: loaded the training generator 'g'")
    elif any(isinstance(k, str) and k.startswith(("style.", "module.style.")) for k in obj):
        sd = obj
    else:
        keys = [k for k in obj][:6]
        raise ValueError(f"{source}: no StyleGAN2 generator found: expected a dict with key "
                         f"'g_ema' (the generator's state dict, keys style.1.weight, "
                         f"input.input, conv1.conv.weight, ...) or such a state dict; got keys "
                         f"{keys}")
    bad = [k for k in sd if not isinstance(k, str)]
    if bad:
        raise ValueError(f"{source}: the generator's state dict has a non-text key {bad[0]!r}")
    if sd and all(k.startswith("module.") for k in sd):  # saved from DataParallel / DDP
        sd = {k[len("module."):]: v for k, v in sd.items()}
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{source}: key {bad[0]!r} holds a {type(sd[bad[0]]).__name__}, not a "
                         f"tensor")
    return sd, latent_avg, notes


def _need(sd, key, ndim, layout, source):
    if key not in sd:
        raise ValueError(f"{source}: missing key {key!r} (expected shape {layout})")
    if sd[key].dim() != ndim:
        raise ValueError(f"{source}: key {key!r} has shape {_shape(sd[key])}, expected "
                         f"{layout}")
    return sd[key]


def _count(sd, pattern, start):
    i = start
    while pattern.format(i) in sd:
        i += 1
    return i - start


def infer_config(sd: dict, source: str = "state dict") -> dict:
    """size, style_dim, n_mlp, channels per resolution and channel_multiplier (None when the
    channels are not the format's table for any multiplier) from a g_ema state dict."""
    style_dim = _need(sd, "style.1.weight", 2, "(style_dim, style_dim)", source).shape[1]
    n_mlp = _count(sd, "style.{}.weight", 1)
    n_blocks = _count(sd, "to_rgbs.{}.conv.weight", 0)
    size = 4 * 2 ** n_blocks
    channels = {4: _need(sd, "input.input", 4, "(1, channels, 4, 4)", source).shape[1]}
    for j in range(n_blocks):
        w = _need(sd, f"convs.{2 * j}.conv.weight", 5,
                  "(1, out_channels, in_channels, 3, 3)", source)
        channels[8 * 2 ** j] = w.shape[1]
    multiplier = None
    for cm in (2, 1, 4, 3, 0.5, 0.25):
        if standard_channels(size, cm) == channels:
            multiplier = cm
            break
    return {"size": size, "style_dim": int(style_dim), "n_mlp": n_mlp,
            "channels": {r: int(c) for r, c in channels.items()},
            "channel_multiplier": multiplier}


def from_checkpoint(obj, source: str = "checkpoint", truncation=None, noise: str = "const",
                    mean_samples: int = 4096) -> StyleGAN2:
    """A StyleGAN2 built to the checkpoint's shapes with its weights loaded.

    `obj`: {'g_ema': state dict, 'latent_avg': (style_dim,)} (or a bare g_ema state dict).
    Refuses a missing, misshapen or unexpected key, naming it and the expected shape."""
    if noise not in NOISE_MODES:
        raise ValueError(f"noise must be one of {NOISE_MODES}, got {noise!r}")
    if truncation is not None:
        if isinstance(truncation, bool) or not isinstance(truncation, (int, float)) \
                or not math.isfinite(truncation) or truncation < 0:
            raise ValueError(f"truncation must be a number ≥ 0 (1 = none; 0.7 is usual), "
                             f"got {truncation!r}")
    sd, latent_avg, notes = _unwrap(obj, source)
    cfg = infer_config(sd, source)
    model = StyleGAN2(cfg["size"], cfg["style_dim"], cfg["n_mlp"],
                      cfg["channel_multiplier"] or 2, cfg["channels"], noise=noise)
    model.channel_multiplier = cfg["channel_multiplier"]
    names, kernels = model.format_names(), model.kernel_names()
    expected = model.format_shapes()
    optional = set(kernels.values()) | {f for f in names.values() if f.startswith("noises.")}
    for key, shape in expected.items():
        if key not in sd:
            if key in optional:
                continue
            raise ValueError(f"{source}: missing key {key!r} (expected shape {shape})")
        if _shape(sd[key]) != shape:
            raise ValueError(f"{source}: key {key!r} has shape {_shape(sd[key])}, expected "
                             f"{shape}")
    extra = [k for k in sd if k not in expected]
    if extra:
        raise ValueError(f"{source}: unexpected key {extra[0]!r} for a {cfg['size']}-px "
                         f"StyleGAN2 with {cfg['n_mlp']} mapping layers")
    own = model.state_dict()
    missing_noise = [f for f in names.values() if f.startswith("noises.") and f not in sd]
    if missing_noise:
        gen = torch.Generator().manual_seed(0)
        notes.append(f"the checkpoint has no noise buffers ({missing_noise[0]}, ...): fixed "
                     f"noise drawn with seed 0")
    for mine, fmt in names.items():
        if fmt in sd:
            own[mine] = sd[fmt].detach().float()
        else:  # a noise image
            own[mine] = torch.randn(own[mine].shape, generator=gen)
    model.load_state_dict(own)
    buffers = dict(model.named_buffers())
    for mine, fmt in kernels.items():
        if fmt in sd:
            buffers[mine].copy_(sd[fmt].detach().float())
    if latent_avg is not None:
        if latent_avg.numel() != cfg["style_dim"]:
            raise ValueError(f"{source}: key 'latent_avg' has shape {_shape(latent_avg)}, "
                             f"expected ({cfg['style_dim']},)")
        model.w_avg.copy_(latent_avg.detach().float().reshape(-1))
        model.has_w_avg = True
    model.truncation = truncation
    if truncation is not None and truncation != 1 and latent_avg is None:
        model.w_avg.copy_(model.mean_w(mean_samples))
        model.has_w_avg = True
        notes.append(f"no 'latent_avg' in the checkpoint: truncation uses the mean w of "
                     f"{mean_samples} latents drawn with seed 0")
    model.notes = notes
    return model.eval()


def load_file(path):
    """Read a checkpoint file weights-only (no code runs). A training checkpoint's `args`
    (an argparse.Namespace of plain values) is the one class allowed besides tensors."""
    from ganpaint.core import checkpoint
    with torch.serialization.safe_globals([argparse.Namespace]):
        return checkpoint.load(path)


def load(path, truncation=None, noise: str = "const", mean_samples: int = 4096) -> StyleGAN2:
    """A `StyleGAN2` built from a rosinality-format checkpoint file (shapes read from its keys),
    loaded safely (weights only), with the `Generator` interface's model arguments."""
    return from_checkpoint(load_file(path), str(path), truncation, noise, mean_samples)


def load_generator(path, device="cpu", truncation=None, noise: str = "const", name=None):
    """A ganpaint `Generator` for a checkpoint file (what `--model stylegan2:PATH` needs)."""
    from ganpaint.adapters.generator import Generator
    model = load(path, truncation, noise)
    return Generator(model, model.z_dim, name or f"stylegan2:{path}", model.preferred_layers,
                     model.paint_layer, device)
