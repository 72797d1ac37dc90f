"""Where model ids are resolved, in one place.

Generators: `scenes` (the shipped scene GAN), `progan:<path.pth>` (a GAN Dissection release
checkpoint), `stylegan2:<path>` (a StyleGAN2 checkpoint in rosinality's stylegan2-pytorch format;
`--model-arg truncation=0.7`, `noise=const|zero|latent`), or `package.module:function` returning
an nn.Module (keyword arguments from `--model-arg key=value`). The model arguments a generator
was loaded with are kept on it (`model_args`): a dissection records them, and commands that
reload its generator (`generator_from_dissection`) reuse them. Segmenters: `scenes` (shipped U-Net), a `.pt` file written by
ganpaint, or `package.module:function` returning a Segmenter.

What runs code: weights are loaded with weights_only=True (data only). An import path runs the
function it names, so it is only used when the user typed it: a name read from a data file (a
dissection's `model` or `segmenter`) is used only if it is a registry id or a weights file
(`spec_from_file`). And an import path must name your own function or class that builds a model:
standard-library and built-in callables (os:system, shutil:rmtree, ...) are refused before any
call, and what the call returns must be a model of the right kind.
"""
from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path

from ganpaint.adapters.generator import Generator

GENERATORS = {
    "scenes": "the shipped scene GAN (64×64, painting layer layer4), models/scenegan.pt",
    "progan:<path>": "a ProGAN .pth state dict from the GAN Dissection release (LSUN 256 px)",
    "stylegan2:<path>": "a StyleGAN2 checkpoint in rosinality's stylegan2-pytorch format (dict "
                        "with g_ema, usually latent_avg; official weights after its conversion); "
                        "resolution, latent size, mapping depth and channels read from the keys; "
                        "--model-arg truncation=0.7, noise=const|zero|latent; painting layer "
                        "b8.conv1 (8×8)",
    "package.module:function": "your own function returning an nn.Module, z → images in [-1, 1]",
}
SEGMENTERS = {
    "scenes": "the shipped U-Net for scene-world concepts, models/segmenter.pt",
    "<path>.pt": "a U-Net segmenter file written by ganpaint train-segmenter",
    "package.module:function": "your own function returning a Segmenter (concepts, segment())",
}
STYLEGAN2_ARGS = {
    "truncation": "a number ≥ 0: w ← w_avg + truncation·(w − w_avg), with the checkpoint's "
                  "latent_avg (1 or unset: none; 0.7 is usual)",
    "noise": "const (the checkpoint's fixed noise images, default) | zero (no noise) | latent "
             "(drawn per latent, from a seed taken from z)",
}
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


def parse_args(pairs) -> dict:
    """`key=value` strings → dict; values parsed as int, float, true/false, or kept as text.
    A dict (model arguments recorded in a dissection) is returned as a copy."""
    if isinstance(pairs, dict):
        return dict(pairs)
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


def _stdlib(module_name) -> bool:
    return str(module_name or "builtins").split(".")[0] in sys.stdlib_module_names


def import_function(path: str):
    """`package.module:function` → the function (imported, never evaluated).

    Only your own Python functions and classes qualify: a module or object from the standard
    library, or a built-in (os:system, os:abort, shutil:rmtree, builtins:exec, also re-exported
    under another module's name), is refused before anything is called."""
    if not _IMPORT_PATH.match(path or ""):
        raise ValueError(f"{path!r} is not an import path of the form package.module:function")
    mod_name, fn_name = path.split(":")
    why = (f"{path}: an import path must name your own function that builds a model; "
           f"refused to call %s")
    if _stdlib(mod_name):
        raise ValueError(why % f"something from Python's standard library ({mod_name})")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as e:
        raise ValueError(f"{path}: cannot import module {mod_name!r}: {e}") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ValueError(f"{path}: module {mod_name!r} has no function {fn_name!r}")
    if not (inspect.isfunction(fn) or inspect.isclass(fn)):
        raise ValueError(why % f"a {type(fn).__name__} (not a Python function or class)")
    if _stdlib(getattr(fn, "__module__", None)):
        raise ValueError(why % f"something from Python's standard library ({fn.__module__})")
    return fn


def spec_from_file(spec, what: str, source, flag: str, trust: bool = False) -> str:
    """A generator or segmenter name read from a data file (`source`), safe to use: a registry
    id or a weights file (loaded weights-only). An import path would run code that the file
    chose, so it is refused unless `trust`; the user can pass it again with `flag`."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"{source}: its {what} field must be a name, got {spec!r}")
    if trust or not _runs_code(spec, what):
        return spec
    raise ValueError(f"{source} names the {what} {spec!r}, an import path: ganpaint never runs "
                     f"code named by a data file. If you trust it, pass {flag} {spec} "
                     f"(or --trust)")


def _runs_code(spec: str, what: str) -> bool:
    """Whether loading `spec` as a generator ("model") or segmenter would call an import path."""
    if spec == "scenes" or (what == "model" and spec.startswith(("progan:", "stylegan2:"))):
        return False
    if what == "segmenter" and (spec.endswith(".pt") or Path(spec).exists()):
        return False
    return ":" in spec and not Path(spec).exists()


def device(spec: str | None) -> str:
    """A checked device name (default: cuda if available, else cpu): clear errors for a device
    torch does not know or this machine does not have."""
    import torch
    if spec is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {spec!r}: use cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return spec
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ValueError(f"device {spec!r}: CUDA is not available on this machine: use --device cpu")
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"device {spec!r}: this machine has {n} CUDA device(s), cuda:0 … cuda:{n - 1}")
        return spec
    if dev.type == "mps" and torch.backends.mps.is_available():
        return spec
    raise ValueError(f"device {spec!r} is not available here: use cpu"
                     + (" or cuda" if torch.cuda.is_available() else ""))


def _call(spec, kwargs, what):
    """Call the function an import path names; a generator or classifier must be an nn.Module."""
    import torch.nn as nn
    fn = import_function(spec)
    try:
        out = fn(**kwargs)
    except TypeError as e:  # the wrong --model-arg names, mostly
        raise ValueError(f"{spec}: calling it with {kwargs or 'no arguments'} failed: {e}") from None
    if what != "segmenter" and not isinstance(out, nn.Module):
        raise ValueError(f"{spec}: must return a torch nn.Module ({what}), got {type(out).__name__}")
    return out


def _no_args(spec, args):
    if args:
        raise ValueError(f"{spec}: takes no --model-arg (got {', '.join(args)}); model arguments "
                         f"are for stylegan2:<path> ({', '.join(STYLEGAN2_ARGS)}) and "
                         f"package.module:function models")


def stylegan2_args(spec, args: dict) -> dict:
    """Checked --model-arg values for a StyleGAN2 checkpoint."""
    bad = [k for k in args if k not in STYLEGAN2_ARGS]
    if bad:
        raise ValueError(f"{spec}: unknown --model-arg {bad[0]!r}. Valid: " + "; ".join(
            f"{k}= ({v})" for k, v in STYLEGAN2_ARGS.items()))
    from ganpaint.adapters.stylegan2 import NOISE_MODES
    if "noise" in args and args["noise"] not in NOISE_MODES:
        raise ValueError(f"{spec}: --model-arg noise={args['noise']}: must be one of "
                         f"{', '.join(NOISE_MODES)}")
    t = args.get("truncation")
    if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not t >= 0
                          or t == float("inf")):
        raise ValueError(f"{spec}: --model-arg truncation={t}: must be a number ≥ 0 (1 = none; "
                         f"0.7 is usual)")
    return args


def load_generator(spec: str = "scenes", device="cpu", model_args=None) -> Generator:
    """A generator by id; `model_args` are `key=value` strings (or a dict). The arguments used
    are kept on it as `model_args` (recorded by a dissection)."""
    args = parse_args(model_args)
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"a model must be named, got {spec!r}")
    if spec == "scenes":
        _no_args(spec, args)
        from ganpaint.world.scenegan import PAINT_LAYER, load_scenegan
        g = load_scenegan(device=device)
        gen = Generator(g, g.z_dim, "scenes", ["layer4", "layer3", "layer5", "layer6"],
                        PAINT_LAYER, device)
    elif spec.startswith("progan:"):
        _no_args(spec, args)
        from ganpaint.core import checkpoint
        from ganpaint.adapters import progan
        path = spec[len("progan:"):]
        g = progan.from_state_dict(checkpoint.load(path), source=path)
        gen = Generator(g, g.z_dim, spec, ["layer4", "layer5", "layer6", "layer7"], "layer4",
                        device)
    elif spec.startswith("stylegan2:"):
        from ganpaint.adapters import stylegan2
        args = stylegan2_args(spec, args)
        path = spec[len("stylegan2:"):]
        if not path:
            raise ValueError("stylegan2: needs a checkpoint file: --model stylegan2:<path>")
        gen = stylegan2.load_generator(path, device, args.get("truncation"),
                                       args.get("noise", "const"), name=spec)
    elif ":" in spec and not Path(spec).exists():
        model = _call(spec, args, "generator")
        z_dim = getattr(model, "z_dim", None) or getattr(model, "latent_size", None)
        if z_dim is None:
            raise ValueError(f"{spec}: the returned model must declare its latent size "
                             f"(attribute z_dim or latent_size)")
        layers = list(getattr(model, "preferred_layers", []) or [])
        gen = Generator(model, z_dim, spec, layers, getattr(model, "paint_layer", None), device)
    else:
        raise ValueError(f"unknown model {spec!r}. Valid: " + "; ".join(
            f"{k} ({v})" for k, v in GENERATORS.items()))
    gen.model_args = args
    return gen


def load_dissection(path):
    """`Dissection.load(path)`, with the scene world's other words for its concepts ("trees",
    "lawn") when the file has none (written before dissections kept their segmenter's aliases)
    and its concepts are the world's."""
    from ganpaint.core.dissection import Dissection
    from ganpaint.home import DataNotFoundError
    d = Dissection.load(path)
    if d.aliases:
        return d
    try:
        from ganpaint.world.labels import ALIASES, CONCEPTS
    except DataNotFoundError:  # no scene world here: canonical names only
        return d
    if set(d.concepts) <= set(CONCEPTS):
        d.aliases = {a: c for a, c in ALIASES.items() if c in d.concepts}
    return d


def generator_from_dissection(d: dict, source, model=None, model_args=None, device="cpu",
                              trust=False) -> Generator:
    """The generator a dissection was made with, loaded with the model arguments it recorded
    (truncation, noise, ...); `model_args` typed by the user override them. A `model` typed by
    the user that is not the dissection's is loaded with the user's arguments only."""
    recorded = d.get("model_args") or {}
    if not isinstance(recorded, dict) or not all(
            isinstance(k, str) and isinstance(v, (str, int, float, bool)) for k, v in recorded.items()):
        raise ValueError(f"{source}: 'model_args' must map names to plain values, got {recorded!r}")
    spec = model or spec_from_file(d.get("model"), "model", source, "--model", trust)
    args = parse_args(model_args)
    if spec == d.get("model"):
        args = {**recorded, **args}
    return load_generator(spec, device, args)


CLASSIFIERS = {
    "scenes-cnn": "the shipped scene-category CNN (conv1 … conv5), models/classifier.pt",
    "package.module:function": "your own function returning an nn.Module classifier",
}


def load_classifier(spec: str = "scenes-cnn", device="cpu", model_args=None):
    """An image classifier (nn.Module on images in [-1, 1]) to dissect on the probe set."""
    if spec == "scenes-cnn":
        from ganpaint.world.classifier import load_cnn
        return load_cnn(device=device)
    if ":" in spec:
        return _call(spec, parse_args(model_args), "classifier")
    raise ValueError(f"unknown classifier {spec!r}. Valid: " + "; ".join(
        f"{k} ({v})" for k, v in CLASSIFIERS.items()))


def load_segmenter(spec: str = "scenes", device="cpu", args=None):
    """A segmenter by id (`scenes`), weights file (`<path>.pt`, a U-Net written by ganpaint) or
    import path (`args` are its keyword arguments): any object with `concepts` and `segment()`
    (the `Segmenter` protocol), so dissection takes segmenters for real photos too. For the
    U-Net of a weights file only, `segmenter.load_unet(path)` is the direct loader."""
    from ganpaint.world.segmenter import DEFAULT_WEIGHTS, load_unet
    if spec in (None, "scenes"):
        return load_unet(DEFAULT_WEIGHTS, device)
    if spec.endswith(".pt") or Path(spec).exists():
        return load_unet(spec, device)
    if ":" in spec:
        seg = _call(spec, parse_args(args), "segmenter")
        if not hasattr(seg, "concepts") or not hasattr(seg, "segment"):
            raise ValueError(f"{spec}: the returned object must have `concepts` and `segment()`")
        return seg
    raise ValueError(f"unknown segmenter {spec!r}. Valid: " + "; ".join(
        f"{k} ({v})" for k, v in SEGMENTERS.items()))
