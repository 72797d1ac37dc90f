"""The scene world's probe set for Network Dissection: held-out renders with exact labels."""
from __future__ import annotations

import torch

from ganpaint.core.sources import ClassifierSource
from ganpaint.world.classifier import PROBE_SEED
from ganpaint.world.labels import ALIASES, CONCEPTS
from ganpaint.world.scenes import render_batch, to_tensor_images


class ProbeSource(ClassifierSource):
    """A classifier dissected on rendered scenes and their label maps.

    Sample i is the render of seed `start + seed * 10_000_000 + i` (held out from training,
    from `PROBE_SEED` by default), at `size` pixels."""

    def __init__(self, model, name: str, size: int = 64, seed: int = 0, perturb=None,
                 device="cpu", start=None, ignore_index=None):
        super().__init__(model, name, CONCEPTS, seed, perturb, device, ignore_index, ALIASES)
        self.size = int(size)
        self.start = PROBE_SEED if start is None else int(start)

    def labelled(self, indices):
        """Renders of the probe seeds and their exact label maps."""
        images, labels = render_batch(
            [self.start + self.seed * 10_000_000 + i for i in indices], self.size)
        return to_tensor_images(images), torch.from_numpy(labels).long()
