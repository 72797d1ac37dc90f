"""A generator wrapped for dissection and painting: deterministic latents, hooked runs,
layer shapes, and split forward passes (cache a layer's output, rerun only the rest)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from ganpaint.core.hooks import Trace, resolve
from ganpaint.core.names import unknown


class Generator:
    """`model` maps z (N, z_dim) to images (N, 3, H, W) in [-1, 1]."""

    def __init__(self, model: nn.Module, z_dim: int, name: str = "model", layers=None,
                 paint_layer: str | None = None, device="cpu"):
        self.model = model.to(device).eval()
        self.z_dim, self.name, self.device = int(z_dim), name, torch.device(device)
        self.preferred_layers = list(layers or [])
        self.paint_layer = paint_layer or (self.preferred_layers[0] if self.preferred_layers else None)

    def latents(self, indices, seed: int = 0) -> torch.Tensor:
        """z for each sample index: sample i is the same whatever the sample count."""
        z = np.stack([np.random.default_rng([int(seed), int(i)]).standard_normal(self.z_dim)
                      for i in indices]).astype(np.float32)
        return torch.from_numpy(z).to(self.device)

    @torch.no_grad()
    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z.to(self.device))

    def layer_names(self) -> list[str]:
        """Every named module of the model: the layers a user may hook or dissect."""
        return [n for n, _ in self.model.named_modules() if n]

    def check_layer(self, name: str) -> str:
        """`name` if the model has that layer; else an error listing close and valid names."""
        resolve(self.model, name)
        return name

    def run(self, z, layers=(), edit=None, stop=False, grad=False):
        """(images or None if stopped early, {layer: output}) for latents z.
        `grad=True` keeps the graph (causal rankings learn through edits)."""
        images = None
        with torch.set_grad_enabled(grad), Trace(self.model, layers, edit=edit, stop=stop) as tr:
            images = self.model(z.to(self.device))
        return images, tr.outputs

    def layer_shapes(self, layers) -> dict:
        """{layer: (channels, height, width)} from one stopped forward pass."""
        _, out = self.run(self.latents([0]), layers, stop=True)
        return {k: tuple(v.shape[1:]) for k, v in out.items()}

    # Split forward passes, for generators that are a sequence of top-level layers.
    def _children(self):
        return list(self.model.named_children()) if isinstance(self.model, nn.Sequential) else None

    def can_split(self, layer: str) -> bool:
        """Whether a pass can stop at `layer` and resume after it (a sequential model's top-level
        child): edits then rerun only the layers after it."""
        children = self._children()
        return children is not None and layer in dict(children)

    def forward_from(self, layer: str, features: torch.Tensor, grad=False) -> torch.Tensor:
        """Run the layers after `layer` on its (possibly edited) output."""
        children = self._children()
        names = [n for n, _ in children] if children else []
        if layer not in names:
            raise unknown("split layer", layer, names)
        x = features
        with torch.set_grad_enabled(grad):
            for _, module in children[names.index(layer) + 1:]:
                x = module(x)
        return x
