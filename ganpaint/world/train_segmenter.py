"""Train the shipped U-Net segmenter on rendered scenes (resumable, CUDA when available)."""
from __future__ import annotations

import math

import torch
from tqdm import tqdm
import torch.nn.functional as F

from ganpaint.core import checkpoint
from ganpaint.world.augment import degrade
from ganpaint.world.labels import CONCEPTS
from ganpaint.world.scenes import SceneStream
from ganpaint.world.segmenter import UNet, export


def train(out_dir="runs/segmenter", export_to="models/segmenter.pt", steps=3000, batch_size=32,
          resolution=64, width=24, lr=3e-3, device=None, log=print, save_every=200):
    """Train the U-Net on endless rendered scenes (degraded like generated images);
    resumable from `out_dir`, exported to `export_to`."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out_dir = checkpoint.run_paths(out_dir, export_to)
    state_path = out_dir / "state.pt"
    torch.manual_seed(0)  # same initial weights every run: a resumed run equals an unbroken one
    net = UNet(len(CONCEPTS), width).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    step = checkpoint.resume(state_path, {"net": net, "opt": opt}, device, log)
    # Rare, small concepts (door, window) get more weight: inverse square root of frequency.
    freq = torch.tensor([0.26, 0.037, 0.19, 0.046, 0.08, 0.22, 0.07, 0.015, 0.063, 0.022])  # world-stats
    weight = (freq.mean() / freq).sqrt().clamp(max=4.0).to(device)
    stream = SceneStream(resolution, batch_size, start=step * batch_size)
    net.train()
    bar = tqdm(total=steps, initial=step, desc=f"train {out_dir.name}", unit="step")
    while step < steps:
        images, labels = next(stream)
        gen = torch.Generator().manual_seed(step)
        x = degrade(images, gen, strength=float(torch.rand(1, generator=gen)) * 1.2).to(device)
        labels = labels.to(device)
        for g in opt.param_groups:  # cosine schedule with a short warm-up
            g["lr"] = lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss = F.cross_entropy(net(x), labels, weight=weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        bar.update(1)
        if step % 50 == 0 or step == steps:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % save_every == 0 or step == steps:
            checkpoint.save({"net": net.state_dict(), "opt": opt.state_dict(), "step": step},
                            state_path)
    bar.close()
    net.eval()
    export(net.cpu(), export_to, resolution, {"steps": steps, "batch_size": batch_size})
    log(f"exported {export_to}")
    return net
