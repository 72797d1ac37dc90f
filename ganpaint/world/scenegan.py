"""The shipped scene GAN: a small ProGAN trained on rendered scenes, and its training loop.

Recipe: non-progressive training at full resolution; hinge loss; spectral norm and a
minibatch-stddev feature in the discriminator; Adam with β1 = 0; an exponential moving
average (EMA) of the generator weights is what ships. Resumable from `runs/gan/state.pt`.

A second, *semantic* discriminator judges the frozen segmenter's encoder features (the idea
of Projected GANs, Sauer et al. 2021): features learnt on the scene world tell a door on a
wall from a smudge far sooner than a discriminator learning from pixels, which matters when
training has hours of two CPU cores rather than days of a GPU.
"""
from __future__ import annotations


import numpy as np
import torch
from tqdm import tqdm
import torch.nn as nn
import torch.nn.functional as F

from ganpaint.core import checkpoint
from ganpaint.core.intervene import cell_shares
from ganpaint.adapters.progan import ProGAN
from ganpaint.world.scenes import SceneStream, to_uint8_images

DEFAULT_WEIGHTS = checkpoint.MODELS / "scenegan.pt"
# 64×64 output; layer4 (8×8, 256 units) is the painting layer.
CONFIG = {"z_dim": 128, "channels": [256, 256, 256, 256, 128, 128, 64, 32],
          "upsample": [False, False, True, False, True, False, True, True]}
PAINT_LAYER = "layer4"


def build_generator(config=None) -> ProGAN:
    """The scene GAN's ProGAN network (64 px; layer4 is the 8×8 painting layer)."""
    return ProGAN(**(config or CONFIG))


def load_scenegan(path=DEFAULT_WEIGHTS, device="cpu") -> ProGAN:
    """The bare ProGAN network of a generator file written by `export` (safely; clear errors
    for bad files). `registry.load_generator("scenes")` wraps it as a `Generator` (latents,
    layers, painting layer), which is what dissection and painting take."""
    state = checkpoint.load(path)
    try:
        g = build_generator(state["config"])
        g.load_state_dict(state["state_dict"])
    except (KeyError, RuntimeError, TypeError) as e:
        raise checkpoint.CheckpointError(f"{path}: not a ganpaint generator file: {e}") from None
    return g.to(device).eval()


load_generator = load_scenegan  # its old name, kept for callers; it is not registry's


def export(g: ProGAN, path, extra=None):
    """Write the generator's weights and config (atomically), for `load_scenegan`."""
    state = {"config": g.config, "state_dict": {k: v.detach().cpu() for k, v in g.state_dict().items()}}
    state.update(extra or {})
    checkpoint.save(state, path)


class MinibatchStd(nn.Module):
    """Appends the batch's mean feature standard deviation: lets D see a lack of variety."""

    def forward(self, x):
        """x with one more channel: the batch's mean feature standard deviation, which
        lets the discriminator see a lack of variety (mode collapse)."""
        g = min(4, x.shape[0])
        y = x[: x.shape[0] // g * g].reshape(g, -1, *x.shape[1:])
        s = y.std(0, unbiased=False).mean((1, 2, 3))  # (N/g,)
        s = s.repeat(g)[:, None, None, None]
        s = torch.cat([s, s[: x.shape[0] - s.shape[0]]]) if s.shape[0] < x.shape[0] else s
        return torch.cat([x, s.expand(-1, 1, *x.shape[2:])], 1)


class Discriminator(nn.Module):
    """The pixel discriminator: real renders vs generated images, at 64 px."""
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
        """One realness score per image (N,)."""
        return self.net(x).squeeze(1)


class SemanticDiscriminator(nn.Module):
    """Patch discriminators on the frozen segmenter's encoder features at 32, 16 and 8 px.

    The encoder is fixed (eval mode, no gradients to its weights); only the small heads learn.
    Gradients still flow through it to the generator's image."""

    def __init__(self, unet, scales=(0, 1, 2)):
        super().__init__()
        self.scales = tuple(scales)
        self.encoder = nn.ModuleList([unet.enc1, unet.enc2, unet.enc3, unet.bottom]).eval()
        self.encoder.requires_grad_(False)
        sn = nn.utils.parametrizations.spectral_norm
        widths = [unet.enc2[0].out_channels, unet.enc3[0].out_channels, unet.bottom[0].out_channels]
        self.heads = nn.ModuleList(
            nn.Sequential(sn(nn.Conv2d(c, 64, 3, padding=1)), nn.LeakyReLU(0.2),
                          sn(nn.Conv2d(64, 64, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
                          sn(nn.Conv2d(64, 1, 1))) if i in self.scales else nn.Identity()
            for i, c in enumerate(widths))

    def train(self, mode=True):
        """Train mode for the head only: the frozen segmenter stays in eval mode."""
        super().train(mode)
        self.encoder.eval()  # batch norm statistics stay those of the shipped segmenter
        return self

    def forward(self, x):
        """One realness score per image from the frozen segmenter's features: it
        judges whether the objects are drawn as the segmenter knows them."""
        scores, h = [], x
        for i, block in enumerate(self.encoder[:max(self.scales) + 2]):
            h = block(h if i == 0 else F.max_pool2d(h, 2))
            if i and i - 1 in self.scales:
                scores.append(self.heads[i - 1](h).flatten(1).mean(1))
        return torch.stack(scores, 1)  # (N, scales): one score per scale


def splice_cells(f: torch.Tensor, labels: torch.Tensor, n_concepts: int, gen=None, per_scene=4):
    """Transplant painting-layer cells into each scene from the next scene of the batch.

    A cell qualifies where its 8 neighbours have the same dominant concept in both scenes (a
    door from a wall onto a wall, not into the sky) while the cells themselves hold different
    concepts. Up to `per_scene` cells are drawn per scene, at least 3 cells apart so that no
    transplant sits in another's neighbourhood. Returns the spliced features and, per
    transplant, (row, donor, y, x); scenes without a qualifying cell are left out."""
    grid = f.shape[-2:]
    shares = cell_shares(labels, n_concepts, grid)
    ring = (F.avg_pool2d(shares, 3, 1, 1, count_include_pad=True) * 9 - shares).argmax(1)
    own = shares.argmax(1)
    donor = torch.arange(len(f)).roll(-1)
    cand = ((ring == ring[donor]) & (own != own[donor])).float()
    spliced, picks = f.clone(), []
    for i in range(len(f)):
        for _ in range(per_scene):
            if not cand[i].any():
                break
            y, x = divmod(int(torch.multinomial(cand[i].flatten(), 1, generator=gen)), grid[1])
            cand[i, max(0, y - 2):y + 3, max(0, x - 2):x + 3] = 0
            spliced[i, :, y, x] = f[donor[i], :, y, x]
            picks.append((i, int(donor[i]), y, x))
    return spliced, picks


def locality_loss(render, f, labels, seg_net, n_concepts, gen=None):
    """Cross-entropy of the segmenter, on the transplanted cells' pixels, between the image
    rendered from spliced features and the donor scene's labels there: a cell's features
    alone should draw its content where the surroundings fit. Zero when no cell qualifies."""
    spliced, picks = splice_cells(f, labels, n_concepts, gen)
    if not picks:
        return f.new_zeros(())
    rows = sorted({p[0] for p in picks})
    logits = seg_net(render(spliced[rows]))
    ch, cw = labels.shape[-2] // f.shape[-2], labels.shape[-1] // f.shape[-1]
    loss = 0.0
    for i, donor, y, x in picks:
        win = (slice(y * ch, (y + 1) * ch), slice(x * cw, (x + 1) * cw))
        k = rows.index(i)
        loss = loss + F.cross_entropy(logits[k:k + 1, :, win[0], win[1]], labels[donor:donor + 1, win[0], win[1]])
    return loss / len(picks)


def sample_grid(g, n=64, seed=0, device="cpu") -> np.ndarray:
    """An 8-wide grid of samples (uint8 HxWx3) for the model card and for looking at."""
    z = torch.randn(n, g.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    with torch.no_grad():
        imgs = to_uint8_images(g(z))
    rows = [np.concatenate(list(imgs[i:i + 8]), 1) for i in range(0, n, 8)]
    return np.concatenate(rows, 0)


class Trainer:
    """The GAN's parts and one training step, shared by `train` and `bench/train_bench.py`
    (so the benchmark times exactly what training runs).

    `amp` runs forward passes under bf16 autocast; `semantic_scales` picks which of the
    segmenter's encoder scales the semantic discriminator judges (fewer is cheaper).
    `locality` weighs `locality_loss` in the generator's loss (0: off): the painting layer's
    cells are what a stroke edits, so a cell's features should draw its content."""

    def __init__(self, batch_size=16, lr_g=1e-3, lr_d=4e-4, device="cpu", semantic=True,
                 segmenter_path=None, config=None, amp=False, semantic_scales=(0, 1, 2), locality=0.0):
        from ganpaint.world.segmenter import DEFAULT_WEIGHTS as SEGMENTER, load_segmenter
        torch.manual_seed(0)  # same initial weights every run: a resumed run equals an unbroken one
        cl = self.memory_format = torch.channels_last  # faster convolutions on the CPU
        self.device, self.batch_size, self.amp = torch.device(device), batch_size, amp
        g, d = build_generator(config).to(device, memory_format=cl), Discriminator().to(device, memory_format=cl)
        self.g, self.d = g, d
        self.g_ema = build_generator(config).to(device, memory_format=cl).eval()
        self.g_ema.load_state_dict(g.state_dict())
        opt_g = torch.optim.Adam(g.parameters(), lr=lr_g, betas=(0.0, 0.99))
        opt_d = torch.optim.Adam(d.parameters(), lr=lr_d, betas=(0.0, 0.99))
        self.parts = {"g": g, "d": d, "g_ema": self.g_ema, "opt_g": opt_g, "opt_d": opt_d}
        self.opt_g, self.discs = opt_g, [(d, opt_d)]
        seg = load_segmenter(segmenter_path or SEGMENTER, device) if semantic or locality else None
        self.locality, self.seg_net = float(locality), seg and seg.net.requires_grad_(False)
        split = list(g._modules).index(PAINT_LAYER) + 1  # the generator up to / after it
        self.g_head, self.g_tail = nn.Sequential(*list(g)[:split]), nn.Sequential(*list(g)[split:])
        if semantic:
            d_sem = SemanticDiscriminator(seg.net, scales=semantic_scales)
            d_sem = d_sem.to(device, memory_format=cl)
            opt_s = torch.optim.Adam(d_sem.heads.parameters(), lr=lr_d, betas=(0.0, 0.99))
            self.parts.update(d_sem=d_sem.heads, opt_d_sem=opt_s)
            self.discs.append((d_sem, opt_s))

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def step(self, real: torch.Tensor, step: int) -> tuple[float, float]:
        """One step: a discriminator step per discriminator (hinge), then a generator step
        against all of them, then the EMA update. Returns (loss_d, loss_g)."""
        real = real.to(self.device).contiguous(memory_format=self.memory_format)
        z = torch.randn(real.shape[0], self.g.z_dim, generator=torch.Generator().manual_seed(step))
        with self._autocast():
            f = self.g_head(z.to(self.device).view(len(z), -1, 1, 1))
            fake = self.g_tail(f)  # one forward serves both steps
        loss_d = 0.0
        for disc, opt in self.discs:
            with self._autocast():
                loss = F.relu(1 - disc(real)).mean() + F.relu(1 + disc(fake.detach())).mean()
            opt.zero_grad(set_to_none=True)
            loss.float().backward()
            opt.step()
            loss_d += loss.item()
        with self._autocast():
            loss_g = -sum(disc(fake).mean() for disc, _ in self.discs)
            if self.locality:
                with torch.no_grad():
                    labels = self.seg_net(fake.detach().float()).argmax(1)
                loss_g = loss_g + self.locality * locality_loss(
                    self.g_tail, f.detach(), labels, self.seg_net, self.seg_net.head.out_channels,
                    torch.Generator().manual_seed(step))
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.float().backward()
        self.opt_g.step()
        beta = min(0.998, (2 + step) / (11 + step))
        with torch.no_grad():
            for pe, p in zip(self.g_ema.parameters(), self.g.parameters()):
                pe.lerp_(p, 1 - beta)
        return loss_d, loss_g.item()


NETWORKS = ("g", "g_ema", "d", "d_sem")  # what a compact training state keeps


def compact_state(parts: dict, step: int) -> dict:
    """A training run's networks in half precision, without the optimisers' moments (Adam
    rebuilds them within a few hundred steps): about 15 MB, small enough to commit, so a run
    continues from it where its full state (about 70 MB) was lost. `parts`: {name: module or
    state dict} (a full state file's content works too)."""
    half = lambda t: t.half() if t.is_floating_point() else t  # noqa: E731
    weights = lambda p: p.state_dict() if hasattr(p, "state_dict") else p  # noqa: E731
    return {"compact_state": {k: {n: half(t) for n, t in weights(parts[k]).items()}
                              for k in NETWORKS if k in parts}, "step": int(step)}


def _start_from(init, tr, device, log) -> int:
    """Seed a fresh run from `init`: a compact training state (networks and step) or a generator
    file (its weights seed G and its EMA; the discriminators start fresh). Returns the step."""
    state = checkpoint.load(init, device)
    if "compact_state" not in state:
        start = load_generator(init, device)
        tr.g.load_state_dict(start.state_dict())
        tr.g_ema.load_state_dict(start.state_dict())
        log(f"fresh run: generator initialised from {init}")
        return 0
    for name, weights in state["compact_state"].items():
        if name in tr.parts:
            part = tr.parts[name]
            part.load_state_dict({k: v.to(part.state_dict()[k].dtype) for k, v in weights.items()})
    log(f"continuing from the compact state {init} at step {state['step']} (fresh optimisers)")
    return int(state["step"])


def train(out_dir="runs/gan", export_to=DEFAULT_WEIGHTS, steps=20000, batch_size=32,
          lr_g=1e-3, lr_d=1e-3, device=None, log=print, semantic=True, segmenter_path=None,
          init=None, locality=0.0):
    """Train (or resume) the scene GAN. `init`: where a fresh run starts (no state in `out_dir`):
    a generator file, or a compact training state (see `compact_state`; written beside the
    full state at every export, as state_compact.pt)."""
    from PIL import Image
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out_dir = checkpoint.run_paths(out_dir, export_to)
    state_path = out_dir / "state.pt"
    tr = Trainer(batch_size, lr_g, lr_d, device, semantic, segmenter_path, locality=locality)
    step = 0
    if init is not None and not state_path.exists():
        step = _start_from(init, tr, device, log)
    step = checkpoint.resume(state_path, tr.parts, device, log, optional=("d_sem", "opt_d_sem")) or step
    stream = SceneStream(tr.g.resolution, batch_size, start=step * batch_size)
    bar = tqdm(total=steps, initial=step, desc=f"train {out_dir.name}", unit="step")
    while step < steps:
        real, _ = next(stream)
        loss_d, loss_g = tr.step(real, step)
        step += 1
        bar.update(1)
        if step % 25 == 0:
            bar.set_postfix(loss_d=f"{loss_d:.3f}", loss_g=f"{loss_g:.3f}")
        if step % 100 == 0 or step == steps:
            checkpoint.save({name: part.state_dict() for name, part in tr.parts.items()} | {"step": step},
                            state_path)
        if step % 500 == 0 or step == steps:
            export(tr.g_ema, export_to, {"steps": step, "batch_size": batch_size})
            checkpoint.save(compact_state(tr.parts, step), out_dir / "state_compact.pt")
            Image.fromarray(sample_grid(tr.g_ema, device=device)).save(out_dir / f"samples_{step:06d}.png")
            bar.write(f"exported {export_to} at step {step}")
    bar.close()
    return tr.g_ema
