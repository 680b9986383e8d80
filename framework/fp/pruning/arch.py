"""Architectures as data: a model built by fp carries its registry name and constructor arguments
(``model.fp_arch = {"name": ..., "kwargs": {...}}``), so a saved model is rebuilt from the
registry rather than from pickled code.

timm is imported only by a run or call that builds a ``timm.<model>`` (importing it imports every
timm model, seconds); ``fp.pruning``'s first import reaches this module before any that imports
torch_pruning, which would import timm for an op counter fp never calls, so it is imported here,
first, with timm hidden (``import_torch_pruning_without_timm``).
"""
from __future__ import annotations

import inspect
import sys
from typing import Any

import gin
import torch
from torch import nn

from fp.attention import expose_heads
from fp.errors import CheckpointError, ConfigError

PLAIN_SCALARS = (bool, int, float, str, type(None))


def import_torch_pruning_without_timm() -> None:
    """Import torch_pruning (if it is not imported yet) without letting it import timm: its op
    counter imports timm at import time to count FLOPs of timm's attention, and fp counts FLOPs
    with torch's own counter, so torch_pruning loses nothing it is used for here."""
    if "torch_pruning" in sys.modules or "timm" in sys.modules:
        return
    sys.modules["timm"] = None  # `import timm` raises ImportError, which torch_pruning catches
    try:
        import torch_pruning  # noqa: F401
    finally:
        del sys.modules["timm"]


import_torch_pruning_without_timm()


def build_model(name: str, *, num_classes: int | None = None, in_channels: int | None = None,
                manager=None, init: str | None = None, **kwargs: Any) -> nn.Module:
    """The registered architecture ``name`` (a built-in, ``torchvision.<model>``,
    ``timm.<model>`` or a plugin's), built through gin so that bindings apply, with
    ``num_classes`` outputs and ``in_channels`` input channels (None: the architecture's own
    default) and its other constructor arguments ``kwargs``. ``model.fp_arch`` records the name
    and the arguments, gin-bound ones included, so ``fp.save``/``fp.load`` rebuild it as data.
    ``manager``: the plugin manager whose registry to use (the shared one by default).
    ``init``: the initialisation scheme (``model.init``), given to the architecture as its
    ``init`` argument; None leaves that argument to gin or the architecture's default. Every
    ``nn.MultiheadAttention`` becomes a ``HeadAttention`` (same function), so its heads prune."""
    from fp.manager import build_registered, shared_manager

    sizes = {"num_classes": num_classes, "in_channels": in_channels}
    kwargs.update({key: value for key, value in sizes.items() if value is not None})
    if init is not None:
        # passed only when set, so that None never overrides a gin binding such as vgg13.init
        if not takes_init(manager or shared_manager(), name):
            raise ConfigError(f"architecture {name!r} takes no 'init' argument, so init = "
                              f"{init!r} cannot apply; leave model.init unset for it.")
        kwargs["init"] = init
    model = expose_heads(build_registered("architectures", name, manager, **kwargs))
    model.fp_arch = {"name": name, "kwargs": {**gin_bound_arguments(name), **kwargs}}
    return model


def takes_init(manager, name: str) -> bool:
    """Whether architecture ``name``'s constructor has an ``init`` argument (or ``**kwargs``)."""
    try:
        params = inspect.signature(manager.registries["architectures"].get(name)).parameters
    except (TypeError, ValueError):  # no signature to read: let the constructor decide
        return True
    return "init" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def gin_bound_arguments(name: str) -> dict[str, Any]:
    """Constructor arguments gin binds for architecture ``name`` (``resnet56.width = 32``)."""
    try:
        bound = gin.get_bindings(f"architectures.{name}")
    except (ValueError, KeyError):  # never configured: nothing bound
        return {}
    return {key: value for key, value in bound.items() if is_plain(value, tensors=False)}


def arch_of(model: nn.Module) -> dict[str, Any]:
    """``model.fp_arch`` checked to be plain data; a clear error when it is missing."""
    arch = getattr(model, "fp_arch", None)
    cls = type(model).__name__
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str):
        raise CheckpointError(f"{cls} has no fp_arch record, so it cannot be saved as data; build "
                              f"it with fp.build_model(name, ...) or set model.fp_arch = "
                              f"{{'name': <registered architecture>, 'kwargs': {{...}}}}.")
    kwargs = dict(arch.get("kwargs") or {})
    if not is_plain(kwargs, tensors=False):
        raise CheckpointError(f"the constructor arguments of {cls} ({kwargs!r}) are not plain data "
                              f"(numbers, strings, lists, tuples, dicts), so they cannot be saved.")
    return {"name": arch["name"], "kwargs": kwargs}


def is_plain(value: Any, *, tensors: bool = True) -> bool:
    """True if ``torch.load(weights_only=True)`` reads ``value`` back unchanged: numbers, strings,
    None, tensors (when allowed) and lists, tuples and str-keyed dicts of those. Exactly those
    types: a subclass (a string enum such as timm's ``Format``) would be pickled as its class."""
    if type(value) in PLAIN_SCALARS:
        return True
    if isinstance(value, torch.Tensor):
        return tensors and not isinstance(value, nn.Parameter)
    if type(value) in (list, tuple):
        return all(is_plain(v, tensors=tensors) for v in value)
    if type(value) is dict:
        return all(isinstance(k, str) and is_plain(v, tensors=tensors) for k, v in value.items())
    return False
