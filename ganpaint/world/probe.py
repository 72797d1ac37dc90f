"""The scene world's probe set for Network Dissection: held-out renders with exact labels."""
from __future__ import annotations

import numpy as np
import torch

from ganpaint.core.sources import ClassifierSource
from ganpaint.world.categories import CATEGORY, CONCEPTS_ALL, render_labelled
from ganpaint.world.classifier import PROBE_SEED
from ganpaint.world.labels import ALIASES, CONCEPTS
from ganpaint.world.scenes import render_batch, to_tensor_images


BLOCK = 10_000_000  # probe seeds per block: one block per use, so no two uses share images
IMPORTANCE_BLOCK, ATTACK_BLOCK = 5, 6  # the classifier experiments' own held-out images


def block(seed: int) -> int:
    """The block of probe seeds a dissection with `seed` renders: 0 for seed 0, 10 + seed for
    the others (never an experiment's block)."""
    return 0 if int(seed) == 0 else 10 + int(seed)


class ProbeSource(ClassifierSource):
    """A classifier dissected on rendered scenes and their label maps.

    Sample i is the render of seed `start + block(seed) · BLOCK + i` (held out from training,
    from `PROBE_SEED` by default), at `size` pixels. `labels="objects"`: the world's objects
    (one map); "all": objects and parts, materials and colours (three maps, see
    `ganpaint.world.categories`), each concept with its category. `style`: the same scenes
    drawn with other colours and textures (`scenes.stylize`), for the shape-vs-texture test."""

    def __init__(self, model, name: str, size: int = 64, seed: int = 0, perturb=None,
                 device="cpu", start=None, ignore_index=None, labels: str = "objects",
                 style: int | None = None):
        if labels not in ("objects", "all"):
            raise ValueError(f"probe labels must be 'objects' or 'all', got {labels!r}")
        if labels == "all" and style is not None:
            raise ValueError("stylized probes carry object labels only: use labels='objects'")
        if labels == "all" and perturb is not None:
            raise ValueError("perturbations move one label map: use labels='objects'")
        concepts = CONCEPTS_ALL if labels == "all" else CONCEPTS
        super().__init__(model, name, concepts, seed, perturb, device, ignore_index, ALIASES)
        self.size, self.labels, self.style = int(size), labels, style
        if not 0 <= int(seed) < 100:
            raise ValueError(f"probe seed must be in 0..99, got {seed}")
        self.start = PROBE_SEED if start is None else int(start)
        self.categories = {c: CATEGORY[c] for c in concepts if c in CATEGORY}

    def describe(self) -> dict:
        """What a dissection records: the classifier, and which probe labels."""
        return {**super().describe(), **({"probe_labels": "all"} if self.labels == "all" else {}),
                **({"style": self.style} if self.style is not None else {})}

    def resume_hint(self, saved: dict) -> str | None:
        """How to resume a run saved with other probe labels: runs that record none (made
        before the choice existed, or with labels='objects') used the object labels."""
        was = saved.get("probe_labels", "objects")
        if was != self.labels:
            return (f"that run used the {was} probe labels: resume it with --probe-labels {was} "
                    f"(labels='{was}')")
        return None

    def labelled(self, indices):
        """Renders of the probe seeds and their exact label maps ((N, S, S), or (N, 3, S, S)
        for all categories)."""
        seeds = [self.start + block(self.seed) * BLOCK + i for i in indices]
        if self.labels == "all":
            pairs = [render_labelled(s, self.size) for s in seeds]
            images, labels = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
        else:
            images, labels = render_batch(seeds, self.size, self.style)
        return to_tensor_images(images), torch.from_numpy(labels).long()
