"""Where dissected activations come from, kept apart from the statistics.

A source turns a list of sample indices into (activations per layer, label maps, images).
`GeneratorSource`: latents → generator (hooked) → images → segmenter. A classifier source
(labelled probe images → classifier) implements the same three methods.
"""
from __future__ import annotations

import torch


def check_labels(labels, n, size, concepts, ignore_index=None) -> torch.Tensor:
    """A segmenter's output as (n, size, size) long labels in 0..concepts-1, or a clear error
    (a segmenter is user code: a wrong type or shape would fail deep inside the counting).
    An `ignore_index` outside 0..concepts-1 (255, -1, ...) becomes label `concepts`, which the
    source lists as the concept "-"."""
    what = "the segmenter's segment()"
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"{what} returned a {type(labels).__name__}: it must return a tensor "
                         f"of labels ({n}, {size}, {size})")
    if tuple(labels.shape) != (n, size, size):
        raise ValueError(f"{what} returned shape {tuple(labels.shape)}: expected ({n}, {size}, {size})")
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"{what} returned {labels.dtype} values: labels must be integers")
    labels = labels.long()
    if ignore_index is not None and not 0 <= ignore_index < concepts:
        labels = torch.where(labels == ignore_index, concepts, labels)
        concepts += 1
    if labels.numel() and (labels.min() < 0 or labels.max() >= concepts):
        raise ValueError(f"{what} returned labels {int(labels.min())}..{int(labels.max())}: "
                         f"they must index its {concepts} concepts (0..{concepts - 1})")
    return labels


def ignore_index(segmenter):
    """The segmenter's declared "no label" index (`ignore_index`), or None; checked."""
    ix = getattr(segmenter, "ignore_index", None)
    if ix is None:
        return None
    if isinstance(ix, bool) or not isinstance(ix, int):
        raise ValueError(f"the segmenter's ignore_index must be a whole number (the label that "
                         f"means 'no label') or None, got {ix!r}")
    return int(ix)


def with_ignore(concepts, ix):
    """Concept names, with "-" appended for an ignore index outside them."""
    concepts = list(concepts)
    return concepts + ["-"] if ix is not None and not 0 <= ix < len(concepts) else concepts


class GeneratorSource:
    """Latents → generator → images → segmenter. Labels the segmenter declares as "no label"
    (`ignore_index`, or a concept named "-") are counted as pixels but never scored."""
    quantile = 0.01  # default top quantile: GAN Dissection's

    def __init__(self, generator, segmenter, seed: int = 0, seg_size: int | None = None,
                 segmenter_id: str = "scenes"):
        self.generator, self.segmenter, self.seed = generator, segmenter, int(seed)
        self.seg_size, self.segmenter_id = seg_size, segmenter_id

    @property
    def ignore_index(self):
        ix = ignore_index(self.segmenter)
        # outside the concepts it is appended to them as "-" (see check_labels)
        return len(self.segmenter.concepts) if ix is not None and not 0 <= ix < len(
            self.segmenter.concepts) else ix

    @property
    def concepts(self):
        return with_ignore(self.segmenter.concepts, ignore_index(self.segmenter))

    def describe(self) -> dict:
        return {"model": self.generator.name,
                "model_args": dict(getattr(self.generator, "model_args", None) or {}),
                "segmenter": self.segmenter_id, "seed": self.seed, "kind": "generator"}

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
        if not torch.isfinite(images).all():
            raise ValueError(f"the generator drew NaN or infinite pixels (samples {indices[0]}–"
                             f"{indices[-1]}): check the model's weights")
        size = self.seg_size or images.shape[-1]
        return acts, check_labels(self.segmenter.segment(images, size), len(indices), size,
                                  len(self.segmenter.concepts), ignore_index(self.segmenter)), images

    def images(self, indices):
        return self.generator(self.generator.latents(indices, self.seed))


class ProbeSource:
    """Labelled probe images → classifier: rendered scenes with their exact label maps.

    Sample i is the render of seed `start + seed * 10_000_000 + i` (held out from training).
    `perturb(images, labels, indices) -> (images, labels)` optionally alters the probe images
    (the robustness experiments); labels move with the pixels they describe.
    """
    quantile = 0.005  # default top quantile: Network Dissection's

    def __init__(self, model, name: str, size: int = 64, seed: int = 0, perturb=None,
                 device="cpu", start=None, ignore_index=None):
        from .classifier import PROBE_SEED
        from .labels import CONCEPTS
        self.model, self.name, self.size, self.seed = model.to(device).eval(), name, size, int(seed)
        self.perturb, self.device = perturb, device
        self.start = PROBE_SEED if start is None else start
        self.concepts = list(CONCEPTS)
        # a probe label that means "no label" (none in the scene world; see GeneratorSource)
        self.ignore_index = ignore_index

    def describe(self) -> dict:
        return {"model": self.name, "segmenter": "probe labels", "seed": self.seed,
                "kind": "classifier"}

    def check_layers(self, layers):
        from .hooks import resolve
        for name in layers:
            resolve(self.model, name)

    def probe(self, indices):
        """(images (N, 3, S, S) in [-1, 1], labels (N, S, S) long) for sample indices."""
        from .scenes import render_batch, to_tensor_images
        images, labels = render_batch([self.start + self.seed * 10_000_000 + i for i in indices], self.size)
        x, y = to_tensor_images(images), torch.from_numpy(labels).long()
        if self.perturb is not None:
            x, y = self.perturb(x, y, list(indices))
        return x, y

    @torch.no_grad()
    def _run(self, x, layers):
        from .hooks import Trace
        with Trace(self.model, layers, stop=True) as tr:
            self.model(x.to(self.device))
        return tr.outputs

    def activations(self, indices, layers, images=False):
        x, _ = self.probe(indices)
        acts = self._run(x, layers)
        return (acts, x) if images else acts

    def batch(self, indices, layers):
        x, y = self.probe(indices)
        return self._run(x, layers), y, x

    def images(self, indices):
        return self.probe(indices)[0]
