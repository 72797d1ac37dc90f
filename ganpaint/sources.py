"""Where dissected activations come from, kept apart from the statistics.

A source turns a list of sample indices into (activations per layer, label maps, images).
`GeneratorSource`: latents → generator (hooked) → images → segmenter. A classifier source
(labelled probe images → classifier) implements the same three methods.
"""
from __future__ import annotations

import torch


class GeneratorSource:
    def __init__(self, generator, segmenter, seed: int = 0, seg_size: int | None = None,
                 segmenter_id: str = "scenes"):
        self.generator, self.segmenter, self.seed = generator, segmenter, int(seed)
        self.seg_size, self.segmenter_id = seg_size, segmenter_id

    @property
    def concepts(self):
        return list(self.segmenter.concepts)

    def describe(self) -> dict:
        return {"model": self.generator.name, "segmenter": self.segmenter_id, "seed": self.seed,
                "kind": "generator"}

    def check_layers(self, layers):
        for name in layers:
            self.generator.check_layer(name)

    def activations(self, indices, layers, images=False):
        """{layer: (N, U, h, w)} and, if asked, the images (N, 3, H, W)."""
        z = self.generator.latents(indices, self.seed)
        img, acts = self.generator.run(z, layers, stop=not images)
        return (acts, img) if images else acts

    def batch(self, indices, layers):
        """(activations {layer: (N, U, h, w)}, labels (N, S, S) long, images (N, 3, H, W))."""
        acts, images = self.activations(indices, layers, images=True)
        labels = self.segmenter.segment(images, self.seg_size or images.shape[-1])
        return acts, labels.long(), images

    def images(self, indices):
        return self.generator(self.generator.latents(indices, self.seed))
