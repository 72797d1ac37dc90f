"""Where model ids are resolved, in one place.

Generators: `scenes` (the shipped scene GAN), `progan:<path.pth>` (a GAN Dissection release
checkpoint), or `package.module:function` returning an nn.Module (keyword arguments from
`--model-arg key=value`). Segmenters: `scenes` (shipped U-Net), a `.pt` file written by
ganpaint, or `package.module:function` returning a Segmenter. Import paths are imported, never
evaluated; weights are loaded with weights_only=True.
"""
from __future__ import annotations

import importlib
import re
from pathlib import Path

from .generator import Generator

GENERATORS = {
    "scenes": "the shipped scene GAN (64×64, painting layer layer4), models/scenegan.pt",
    "progan:<path>": "a ProGAN .pth state dict from the GAN Dissection release (LSUN 256 px)",
    "package.module:function": "your own function returning an nn.Module, z → images in [-1, 1]",
}
SEGMENTERS = {
    "scenes": "the shipped U-Net for scene-world concepts, models/segmenter.pt",
    "<path>.pt": "a U-Net segmenter file written by ganpaint train-segmenter",
    "package.module:function": "your own function returning a Segmenter (concepts, segment())",
}
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


def parse_args(pairs) -> dict:
    """`key=value` strings → dict; values parsed as int, float, true/false, or kept as text."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"--model-arg {pair!r}: expected key=value")
        k, v = pair.split("=", 1)
        low = v.lower()
        if low in ("true", "false"):
            out[k] = low == "true"
            continue
        for cast in (int, float):
            try:
                out[k] = cast(v)
                break
            except ValueError:
                pass
        else:
            out[k] = v
    return out


def import_function(path: str):
    """`package.module:function` → the function (imported, never evaluated)."""
    if not _IMPORT_PATH.match(path or ""):
        raise ValueError(f"{path!r} is not an import path of the form package.module:function")
    mod_name, fn_name = path.split(":")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as e:
        raise ValueError(f"{path}: cannot import module {mod_name!r}: {e}") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ValueError(f"{path}: module {mod_name!r} has no function {fn_name!r}")
    return fn


def load_generator(spec: str = "scenes", device="cpu", model_args=None) -> Generator:
    if spec == "scenes":
        from .scenegan import PAINT_LAYER, load_generator as load_scenegan
        g = load_scenegan(device=device)
        return Generator(g, g.z_dim, "scenes", ["layer4", "layer3", "layer5", "layer6"],
                         PAINT_LAYER, device)
    if spec.startswith("progan:"):
        from . import checkpoint, progan
        path = spec[len("progan:"):]
        g = progan.from_state_dict(checkpoint.load(path), source=path)
        return Generator(g, g.z_dim, spec, ["layer4", "layer5", "layer6", "layer7"], "layer4",
                         device)
    if ":" in spec and not Path(spec).exists():
        fn = import_function(spec)
        model = fn(**parse_args(model_args))
        z_dim = getattr(model, "z_dim", None) or getattr(model, "latent_size", None)
        if z_dim is None:
            raise ValueError(f"{spec}: the returned model must declare its latent size "
                             f"(attribute z_dim or latent_size)")
        layers = list(getattr(model, "preferred_layers", []) or [])
        return Generator(model, z_dim, spec, layers, getattr(model, "paint_layer", None), device)
    raise ValueError(f"unknown model {spec!r}. Valid: " + "; ".join(
        f"{k} ({v})" for k, v in GENERATORS.items()))


CLASSIFIERS = {
    "scenes-cnn": "the shipped scene-category CNN (conv1 … conv5), models/classifier.pt",
    "package.module:function": "your own function returning an nn.Module classifier",
}


def load_classifier(spec: str = "scenes-cnn", device="cpu", model_args=None):
    """An image classifier (nn.Module on images in [-1, 1]) to dissect on the probe set."""
    if spec == "scenes-cnn":
        from .classifier import load_classifier as load_cnn
        return load_cnn(device=device)
    if ":" in spec:
        model = import_function(spec)(**parse_args(model_args))
        if not callable(model):
            raise ValueError(f"{spec}: the function must return an nn.Module")
        return model
    raise ValueError(f"unknown classifier {spec!r}. Valid: " + "; ".join(
        f"{k} ({v})" for k, v in CLASSIFIERS.items()))


def load_segmenter(spec: str = "scenes", device="cpu", args=None):
    from .segmenter import DEFAULT_WEIGHTS, load_segmenter as load_unet
    if spec in (None, "scenes"):
        return load_unet(DEFAULT_WEIGHTS, device)
    if spec.endswith(".pt") or Path(spec).exists():
        return load_unet(spec, device)
    if ":" in spec:
        seg = import_function(spec)(**parse_args(args))
        if not hasattr(seg, "concepts") or not hasattr(seg, "segment"):
            raise ValueError(f"{spec}: the returned object must have `concepts` and `segment()`")
        return seg
    raise ValueError(f"unknown segmenter {spec!r}. Valid: " + "; ".join(
        f"{k} ({v})" for k, v in SEGMENTERS.items()))
