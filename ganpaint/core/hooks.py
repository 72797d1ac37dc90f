"""Trace and edit the outputs (and inputs) of named submodules of any nn.Module.

`Trace` is a context manager: it retains layer outputs, replaces them through edit functions,
and can stop the forward pass once every traced layer has run (no wasted computation past the
layer being dissected). Hooks are always removed on exit, exceptions included.

Dissection, painting and the causal rankings all read or edit one layer's output; a layer
that returns a tuple or dict (nn.LSTM's `(output, (h, c))`, a block returning features and a
skip) is handled by picking one tensor in it: the first tensor by default, or a named element
(`select`), which is retained and edited while the rest of the structure flows on unchanged.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn as nn

from ganpaint.core.names import unknown


class StopForward(Exception):
    """Raised inside a hook to end the forward pass early; swallowed by `Trace`."""


def resolve(model: nn.Module, name: str) -> nn.Module:
    """The submodule called `name` (dotted, as in named_modules()); error lists valid names.

    One place resolves layer names, so a typo anywhere (CLI, app, library) gets the same
    did-you-mean message instead of a bare KeyError."""
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        raise unknown("layer", name, [n for n in modules if n])
    return modules[name]


# --- picking one tensor out of a module's output (a tensor, or tuples/lists/dicts of them) ---

def describe(obj) -> str:
    """A short picture of an output's structure, e.g. `tuple(Tensor(2, 5, 8), tuple(...))`,
    for error messages that say what a layer returned."""
    if torch.is_tensor(obj):
        return f"Tensor{tuple(obj.shape)}"
    if isinstance(obj, dict):
        return f"{type(obj).__name__}(" + ", ".join(
            f"{k!r}: {describe(v)}" for k, v in obj.items()) + ")"
    if isinstance(obj, (tuple, list)):
        return f"{type(obj).__name__}(" + ", ".join(describe(v) for v in obj) + ")"
    return type(obj).__name__


def _key(obj, key):
    """`key` as an index into `obj` (a namedtuple's field name becomes its position)."""
    if isinstance(obj, tuple) and isinstance(key, str) and hasattr(obj, "_fields"):
        return obj._fields.index(key)
    return key


def first_tensor(obj, path=()):
    """The path (tuple of keys) to the first tensor in `obj`, depth first; None if it has none."""
    if torch.is_tensor(obj):
        return path
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (tuple, list)):
        items = enumerate(obj)
    else:
        return None
    for k, v in items:
        found = first_tensor(v, path + (k,))
        if found is not None:
            return found
    return None


def element_path(obj, select=None, what="output") -> tuple:
    """The path to the tensor that `select` names in `obj`: None → the first tensor; an int or
    str → that element (a tuple/list index, a dict key or a namedtuple field); a tuple of
    them → a nested element, e.g. (1, 0) for nn.LSTM's h. Errors show the structure."""
    if select is None:
        path = first_tensor(obj)
        if path is None:
            raise TypeError(f"the {what} has no tensor to trace: {describe(obj)}")
        return path
    path = tuple(select) if isinstance(select, (tuple, list)) else (select,)
    node, keys = obj, []
    for k in path:
        try:
            k = _key(node, k)
            node = node[k]
        except (KeyError, IndexError, TypeError, ValueError):
            raise KeyError(f"select={select!r}: the {what} has no element {k!r}; it is "
                           f"{describe(obj)}") from None
        keys.append(k)
    if not torch.is_tensor(node):
        raise TypeError(f"select={select!r} names a {describe(node)}, not a tensor, in the "
                        f"{what} {describe(obj)}")
    return tuple(keys)


def get_element(obj, path):
    """The element of `obj` at `path` (as returned by `element_path`)."""
    for k in path:
        obj = obj[k]
    return obj


def replace_element(obj, path, value):
    """A copy of `obj` with the element at `path` replaced by `value`; the containers along the
    path are copied (same types: namedtuples, dict subclasses), the rest is shared."""
    if not path:
        return value
    k, rest = path[0], path[1:]
    child = replace_element(obj[k], rest, value)
    if isinstance(obj, dict):
        new = copy.copy(obj)
        new[k] = child
        return new
    items = list(obj)
    items[k] = child
    if isinstance(obj, list):
        return type(obj)(items) if type(obj) is not list else items
    if hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*items)
    if type(obj) is tuple:
        return tuple(items)
    try:  # torch.return_types and other structseqs take a sequence
        return type(obj)(items)
    except TypeError:
        return tuple(items)


class Trace:
    """with Trace(model, ["layer4"], edit={"layer4": fn}, stop=True) as tr: model(z); tr["layer4"]

    - `layers`: dotted module names to retain (and/or edit).
    - `edit`: {name: fn(tensor) -> new tensor}; the new output flows on through the network.
    - `select`: {name: key} for layers that return a tuple, list or dict: which tensor in it
      is retained and edited (an index, a key, a namedtuple field, or a tuple of them for a
      nested one, e.g. `(1, 0)` for nn.LSTM's h). Without it: the first tensor, depth first
      (nn.LSTM's output sequence). The rest of the structure flows on unchanged.
    - `stop`: end the forward pass (without error) when all `layers` have run, whether or not
      anything is retained (`retain=False` with an edit stops too).
    - `retain`: keep each layer's (selected) output in `outputs` / `tr[name]`.
    - `retain_input`: keep each layer's input (the first tensor among its positional
      arguments) in `inputs`: what a layer receives, e.g. to fit a replacement for it.
      Inputs are read before the layer runs and copied for in-place modules (ReLU(inplace=True)
      would otherwise overwrite the retained value).
    - `detach`: retain detached tensors (default) so retained values hold no graph.
    - `clone`: retain copies, for networks whose later layers modify tensors in place.
    """

    def __init__(self, model: nn.Module, layers=(), edit: dict[str, Callable] | None = None,
                 stop: bool = False, retain: bool = True, detach: bool = True,
                 retain_input: bool = False, select: dict | None = None, clone: bool = False):
        self.model = model
        self.edit = dict(edit or {})
        self.select = dict(select or {})
        self.layers = list(dict.fromkeys(list(layers) + list(self.edit) + list(self.select)))
        self.stop, self.retain, self.detach, self.clone = stop, retain, detach, clone
        self.retain_input = retain_input
        self.outputs: dict = {}
        self.inputs: dict = {}
        self._ran: set = set()
        self._handles = []
        for name in self.layers:  # resolve all names first: no hook is left behind on error
            resolve(model, name)

    def __enter__(self):
        self._ran = set()
        try:
            for name in self.layers:
                module = resolve(self.model, name)
                if self.retain_input:
                    self._handles.append(module.register_forward_pre_hook(self._pre_hook(name)))
                self._handles.append(module.register_forward_hook(self._hook(name)))
        except BaseException:
            self._remove()
            raise
        return self

    def _keep(self, t, copy_it=False):
        t = t.detach() if self.detach else t
        return t.clone() if (self.clone or copy_it) else t

    def _pre_hook(self, name):
        def hook(module, inputs):
            path = element_path(inputs, None, f"input of layer {name!r}")
            self.inputs[name] = self._keep(get_element(inputs, path),
                                           copy_it=bool(getattr(module, "inplace", False)))
        return hook

    def _hook(self, name):
        def hook(module, inputs, output):
            if name in self.edit or self.retain:
                path = element_path(output, self.select.get(name), f"output of layer {name!r}")
                value = get_element(output, path)
                if name in self.edit:
                    value = self.edit[name](value)
                    output = replace_element(output, path, value)
                if self.retain:
                    self.outputs[name] = self._keep(value)
            self._ran.add(name)
            if self.stop and self._ran.issuperset(self.layers):
                raise StopForward
            return output
        return hook

    def _remove(self):
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __exit__(self, exc_type, exc, tb):
        self._remove()
        return exc_type is StopForward

    def __getitem__(self, name):
        return self.outputs[name]
