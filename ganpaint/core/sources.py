"""Where dissected activations come from, kept apart from the statistics.

A source turns a list of sample indices into (activations per layer, label maps, images).
`GeneratorSource`: latents → generator (hooked) → images → segmenter (any object with the
`Segmenter` protocol below). `ClassifierSource`: labelled probe images → classifier (hooked);
a probe set (e.g. the scene world's, `ganpaint.world.probe`) says where the images come from.
"""
from __future__ import annotations

import torch

from ganpaint.core.hooks import Trace, resolve


class Segmenter:
    """What a segmenter provides. Images are float (N, 3, H, W) in [-1, 1].

    - `concepts`: list of concept names; label i of a map means `concepts[i]`.
    - `segment(images, size=None)`: long (N, size, size) label map (size defaults to H).
    - `probabilities(images, size=None, grad=False)`: float (N, C, size, size), optional;
      `grad=True` (optional too) keeps the graph, which causal unit rankings learn through.
    - `features(images)` (optional): float (N, D), one feature vector per image (the U-Net's
      deepest features, spatially averaged). Only `eval_gan`'s Fréchet distance on the
      segmenter uses it; without it that distance is skipped with a note in the result.
    - `ignore_index` (optional, default None): the label that means "no label" (e.g. 0 of a
      segmenter whose concept 0 is "-"; or 255 outside the concepts). A concept named "-" is
      such a label too. Dissection counts its pixels (a unit's mask may cover them) but never
      scores, ranks or lists it as a concept.
    - `aliases` (optional): {other word: concept name} ("trees" → "tree"), kept with a
      dissection so that a concept can be asked for by either.
    """

    concepts: list[str] = []
    ignore_index: int | None = None

    def segment(self, images: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """Labels (N, size, size) long: the most probable concept per pixel."""
        return self.probabilities(images, size).argmax(1)

    def probabilities(self, images: torch.Tensor, size: int | None = None, grad=False) -> torch.Tensor:
        """Per-concept probabilities (N, C, size, size); optional."""
        raise NotImplementedError(f"{type(self).__name__} gives label maps only")


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
        """The label counted as "no label" (None if none)."""
        ix = ignore_index(self.segmenter)
        # outside the concepts it is appended to them as "-" (see check_labels)
        return len(self.segmenter.concepts) if ix is not None and not 0 <= ix < len(
            self.segmenter.concepts) else ix

    @property
    def concepts(self):
        """The segmenter's concepts, with "-" appended for an ignore index outside them."""
        return with_ignore(self.segmenter.concepts, ignore_index(self.segmenter))

    @property
    def aliases(self) -> dict:
        """The segmenter's other words for its concepts (`aliases`, optional)."""
        return dict(getattr(self.segmenter, "aliases", None) or {})

    def describe(self) -> dict:
        """What a dissection records about where its samples came from."""
        return {"model": self.generator.name,
                "model_args": dict(getattr(self.generator, "model_args", None) or {}),
                "segmenter": self.segmenter_id, "seed": self.seed, "kind": "generator"}

    def check_layers(self, layers):
        """Fail before any work if a layer is not in the generator (listing the valid ones)."""
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
        """The generated images of sample indices (N, 3, H, W)."""
        return self.generator(self.generator.latents(indices, self.seed))


class ClassifierSource:
    """Labelled probe images → classifier (Network Dissection): the labels are the probe set's
    own, not a segmenter's. A subclass says where the images come from (`labelled`); e.g. the
    scene world's rendered probe set, `ganpaint.world.probe.ProbeSource`.

    `perturb(images, labels, indices) -> (images, labels)` optionally alters the probe images
    (the robustness experiments); labels move with the pixels they describe.
    """
    quantile = 0.005  # default top quantile: Network Dissection's

    def __init__(self, model, name: str, concepts, seed: int = 0, perturb=None, device="cpu",
                 ignore_index=None, aliases=None):
        self.model, self.name, self.seed = model.to(device).eval(), name, int(seed)
        self.concepts, self.perturb, self.device = list(concepts), perturb, device
        self.ignore_index = ignore_index  # a probe label that means "no label" (see Segmenter)
        self.aliases = dict(aliases or {})

    def labelled(self, indices):
        """(images (N, 3, S, S) in [-1, 1], labels (N, S, S) long) of the probe set."""
        raise NotImplementedError(f"{type(self).__name__} must say where its probe images come from")

    def describe(self) -> dict:
        """What a dissection records about where its samples came from."""
        return {"model": self.name, "segmenter": "probe labels", "seed": self.seed,
                "kind": "classifier"}

    def check_layers(self, layers):
        """Fail before any work if a layer is not in the classifier (listing the valid ones)."""
        for name in layers:
            resolve(self.model, name)

    def probe(self, indices):
        """The probe images and labels for sample indices, perturbed if asked."""
        x, y = self.labelled(indices)
        if self.perturb is not None:
            x, y = self.perturb(x, y, list(indices))
        return x, y

    @torch.no_grad()
    def _run(self, x, layers):
        with Trace(self.model, layers, stop=True) as tr:
            self.model(x.to(self.device))
        return tr.outputs

    def activations(self, indices, layers, images=False):
        """{layer: (N, U, h, w)} for the probe images of sample indices (and the images)."""
        x, _ = self.probe(indices)
        acts = self._run(x, layers)
        return (acts, x) if images else acts

    def batch(self, indices, layers):
        """(activations, probe labels, images) of sample indices."""
        x, y = self.probe(indices)
        return self._run(x, layers), y, x

    def images(self, indices):
        """The probe images of sample indices (N, 3, S, S)."""
        return self.probe(indices)[0]
