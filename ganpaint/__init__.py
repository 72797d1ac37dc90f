"""ganpaint: GAN dissection and semantic painting.

The package is layered; dependencies point one way, apps → world/adapters → core:

- `ganpaint.core`: the engine, with no knowledge of any particular model or world: hooks,
  one-pass statistics, dissection, the `Dissection` results object, causal rankings, the
  intervention engine, image sources;
- `ganpaint.world`: the embedded default: the procedural scene renderer and its labels, and the
  segmenter, scene GAN and scene classifier trained on it;
- `ganpaint.adapters`: generators from elsewhere (ProGAN and StyleGAN2 checkpoints, any
  `nn.Module` by import path) behind one `Generator` interface;
- `ganpaint.apps`: what people run: the CLI, the painting app, experiments, reports, inversion.

The names below are the public API (`import ganpaint as gp; gp.dissect(...)`); they are imported
on first use, so `import ganpaint` stays cheap.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "dissect": "ganpaint.core.dissect", "tally": "ganpaint.core.dissect",
    "Dissection": "ganpaint.core.dissection",
    "Painter": "ganpaint.core.intervene", "Stroke": "ganpaint.core.intervene",
    "apply_strokes": "ganpaint.core.intervene",
    "Trace": "ganpaint.core.hooks", "TailStats": "ganpaint.core.stats",
    "GeneratorSource": "ganpaint.core.sources", "ClassifierSource": "ganpaint.core.sources",
    "Segmenter": "ganpaint.core.sources", "UnknownNameError": "ganpaint.core.names",
    "Generator": "ganpaint.adapters.generator",
    "ProbeSource": "ganpaint.world.probe",
    "load_generator": "ganpaint.apps.registry", "load_segmenter": "ganpaint.apps.registry",
    "load_classifier": "ganpaint.apps.registry",
    "ablation": "ganpaint.apps.experiments", "insertion": "ganpaint.apps.experiments",
    "invert": "ganpaint.apps.invert",
}
_EXPORTS["learn_causal"] = "ganpaint.core.causal:learn_all"

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ganpaint' has no attribute {name!r}")
    module, _, attr = _EXPORTS[name].partition(":")
    value = getattr(importlib.import_module(module), attr or name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
