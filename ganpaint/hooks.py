"""Trace and edit the outputs of named submodules of any nn.Module.

`Trace` is a context manager: it retains layer outputs, replaces them through edit functions,
and can stop the forward pass once every traced layer has run (no wasted computation past the
layer being dissected). Hooks are always removed on exit, exceptions included.
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from .labels import unknown


class StopForward(Exception):
    """Raised inside a hook to end the forward pass early; swallowed by `Trace`."""


def resolve(model: nn.Module, name: str) -> nn.Module:
    """The submodule called `name` (dotted, as in named_modules()); error lists valid names."""
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        raise unknown("layer", name, [n for n in modules if n])
    return modules[name]


class Trace:
    """with Trace(model, ["layer4"], edit={"layer4": fn}, stop=True) as tr: model(z); tr["layer4"]

    - `layers`: dotted module names to retain (and/or edit).
    - `edit`: {name: fn(output) -> new output}; the new output flows on through the network.
    - `stop`: end the forward pass (without error) when all `layers` have produced output.
    - `detach`: retain detached tensors (default) so retained outputs hold no graph.
    """

    def __init__(self, model: nn.Module, layers=(), edit: dict[str, Callable] | None = None,
                 stop: bool = False, retain: bool = True, detach: bool = True):
        self.model = model
        self.edit = dict(edit or {})
        self.layers = list(dict.fromkeys(list(layers) + list(self.edit)))
        self.stop, self.retain, self.detach = stop, retain, detach
        self.outputs: dict = {}
        self._handles = []
        for name in self.layers:  # resolve all names first: no hook is left behind on error
            resolve(model, name)

    def __enter__(self):
        for name in self.layers:
            self._handles.append(resolve(self.model, name).register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name):
        def hook(module, inputs, output):
            if name in self.edit:
                output = self.edit[name](output)
            if self.retain:
                self.outputs[name] = output.detach() if self.detach else output
            if self.stop and all(n in self.outputs for n in self.layers):
                raise StopForward
            return output
        return hook

    def __exit__(self, exc_type, exc, tb):
        for h in self._handles:
            h.remove()
        self._handles.clear()
        return exc_type is StopForward

    def __getitem__(self, name):
        return self.outputs[name]
