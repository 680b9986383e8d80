"""Every timm model as an architecture named ``timm.<model>``, created on first use.

``import timm`` imports every one of its model modules (seconds), so registration creates no
class per model as the torchvision family does: it registers ``TimmFamily``, which the registry
asks for ``timm.<model>`` only when a run, a binding or ``fp.build_model`` names one (see
``fp.registry``). ``fp list`` counts the models by reading timm's installed source instead.

A model is built by ``timm.create_model`` with fp's ``num_classes`` and ``in_channels`` (timm's
``in_chans``); its other arguments (``drop_rate``, ``drop_path_rate``, ...) bind per model,
``timm.convnext_atto.drop_path_rate = 0.1``. Its initial weights are a family-wide setting, the
gin configurable ``timm``: untrained by default, ``timm.checkpoint = PATH`` (a local state dict,
read weights-only) or ``timm.pretrained = True`` (timm's download). Those stay out of the
model's recorded constructor arguments, so ``fp.load`` never fetches weights it replaces.
timm is optional (``pip install flowprune[timm]``); without it only ``timm.`` names fail.
"""
from __future__ import annotations

import functools
import importlib.util
import pickle
import re
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import gin
from torch import nn

from fp.errors import ConfigError, RegistryError, did_you_mean
from fp_builtins.architectures._layers import Init, initialise

PREFIX = "timm."
INSTALL = "pip install flowprune[timm]"
#: a model function timm registers: ``@register_model`` on the line above its ``def``
REGISTERED = re.compile(r"^@register_model\b[^\n]*\ndef\s+(\w+)", re.MULTILINE)
#: ``create_model`` arguments fp sets itself, and where the user sets them instead
RESERVED = {"pretrained": "bind timm.pretrained = True instead",
            "checkpoint_path": "bind timm.checkpoint = PATH instead",
            "in_chans": "fp sets it from the dataset's channels",
            "pretrained_cfg": "fp builds the architecture, timm.pretrained its weights",
            "pretrained_cfg_overlay": "fp builds the architecture, timm.pretrained its weights"}


@gin.configurable("timm")
def weights(checkpoint: str | None = None, pretrained: bool = False) -> tuple[str | None, bool]:
    """Where every timm model's initial weights come from: ``checkpoint``, a local state dict
    (``torch.save(model.state_dict(), PATH)``), or timm's pretrained download; neither means
    untrained. A family-wide setting, not a model argument: ``fp.load`` replaces the weights."""
    if checkpoint and pretrained:
        raise ConfigError("timm.checkpoint and timm.pretrained = True both choose the initial "
                          "weights; bind one of them.")
    return checkpoint or None, bool(pretrained)


class TimmFamily:
    """timm's image models as timm.<model>, built untrained unless timm.checkpoint or
    timm.pretrained says otherwise (docs/timm.md)."""

    name = PREFIX + "<model>"
    family_prefix = PREFIX

    @staticmethod
    def describe() -> str:
        count = model_count()
        if count is None:
            return f"timm's image models as timm.<model>: timm is not installed ({INSTALL})."
        return (f"timm's image models as timm.<model>: {count} in timm {timm_version()}, built "
                f"untrained unless timm.checkpoint or timm.pretrained is bound (docs/timm.md).")

    @staticmethod
    def member(name: str) -> type:
        return architecture_class(name.removeprefix(PREFIX))


@functools.cache
def model_count() -> int | None:
    """How many models the installed timm registers, counted in its source files without
    importing it (``fp list`` would otherwise wait seconds); None when timm is not installed."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    return sum(len(REGISTERED.findall(path.read_text(encoding="utf-8", errors="replace")))
               for path in folder.rglob("*.py"))


def timm_version() -> str:
    try:
        return metadata.version("timm")
    except metadata.PackageNotFoundError:  # a source checkout on the path, not installed
        return "(source)"


def import_timm(label: str) -> ModuleType:
    """timm, or the one sentence saying how to install it."""
    try:
        import timm
    except ImportError:
        raise RegistryError(f"architecture {label!r} needs timm, which is not installed; "
                            f"{INSTALL}.") from None
    return timm


@functools.cache
def architecture_class(model: str) -> type:
    """The class for timm's ``model`` (one per process, so gin keeps one configurable): a class,
    not a function, because the registry and gin expect classes with a ``name``."""
    label = PREFIX + model
    timm = import_timm(label)
    if "." in model:  # "resnet18.a1_in1k": a pretrained tag chooses weights, not an architecture
        architecture = model.partition(".")[0]
        raise RegistryError(f"{label!r} names one of timm's sets of weights, not an architecture; "
                            f"name {PREFIX + architecture!r} and bind timm.pretrained = True "
                            f"(timm's default weights) or timm.checkpoint = PATH.")
    if not timm.is_model(model):
        known = timm.list_models()
        hint = did_you_mean(label, [PREFIX + m for m in known])
        raise RegistryError(f"unknown architecture {label!r}{hint}: timm {timm.__version__} has "
                            f"no model {model!r} (timm.list_models() lists its {len(known)}).")

    def __new__(cls, num_classes: int = 1000, in_channels: int = 3, init: Init = None,
                **kwargs: Any) -> nn.Module:
        return build(model, num_classes=num_classes, in_channels=in_channels, init=init, **kwargs)

    return type(f"timm_{model}", (), {
        "__new__": __new__,
        "__doc__": f"timm's {model}, built by timm.create_model (other arguments go to it).",
        "__module__": __name__,
        "name": label,
        "timm_model": model,
    })


def build(model: str, num_classes: int, in_channels: int, init: str | None = None,
          **kwargs: Any) -> nn.Module:
    """timm's ``model`` with ``num_classes`` outputs and ``in_channels`` input channels, its
    weights as the ``timm`` configurable says, and the initialisation ``init`` (None: timm's)."""
    label = PREFIX + model
    timm = import_timm(label)
    checkpoint, pretrained = weights()
    for argument, instead in RESERVED.items():
        if argument in kwargs:
            raise ConfigError(f"{label} does not take {argument!r} as a model argument: "
                              f"{instead}.")
    if init is not None and (checkpoint or pretrained):
        raise ConfigError(f"init = {init!r} would overwrite the weights that "
                          f"{'timm.checkpoint' if checkpoint else 'timm.pretrained'} loads into "
                          f"{label}; leave model.init unset for it.")
    try:
        network = timm.create_model(model, pretrained=pretrained, num_classes=num_classes,
                                    in_chans=in_channels, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{label} rejected its arguments {sorted(kwargs)}: "
                          f"{first_line(exc)}.") from exc
    except (OSError, RuntimeError) as exc:  # the download, offline, or weights that do not fit
        if not pretrained:
            raise
        raise ConfigError(f"timm.pretrained = True could not load timm's weights for {label} "
                          f"({first_line(exc)}); where the hub cannot be reached, save the "
                          f"weights to a file elsewhere and bind timm.checkpoint = PATH "
                          f"instead.") from None
    if checkpoint:
        load_checkpoint(network, checkpoint, label)
    else:
        initialise(network, init, default=None, built_with=None, label=label)
    return network


def load_checkpoint(network: nn.Module, path: str, label: str) -> None:
    """Load the state dict at ``path`` into ``network``. A classifier of another shape (weights
    trained on ImageNet's 1000 classes, a dataset with 10) keeps its fresh weights, as timm
    does for pretrained weights; any other mismatch is an error naming the first culprit."""
    saved = read_state_dict(path)
    own = network.state_dict()
    head = classifier_keys(network)
    refit = {k for k in head if k in saved and saved[k].shape != own[k].shape}
    missing = [k for k in own if k not in saved and k not in refit]
    unexpected = [k for k in saved if k not in own]
    misshapen = [k for k in own if k in saved and k not in refit
                 and saved[k].shape != own[k].shape]
    problems = [f"{len(missing)} missing (first {missing[0]!r})" if missing else "",
                f"{len(unexpected)} unexpected (first {unexpected[0]!r})" if unexpected else "",
                f"{len(misshapen)} of another shape (first {misshapen[0]!r}: "
                f"{tuple(saved[misshapen[0]].shape)} saved, {tuple(own[misshapen[0]].shape)} "
                f"here)" if misshapen else ""]
    if any(problems):
        raise ConfigError(f"timm.checkpoint = {path!r} does not fit {label}: tensors "
                          f"{', '.join(p for p in problems if p)}.")
    network.load_state_dict({k: own[k] if k in refit else saved[k] for k in own})


def read_state_dict(path: str) -> dict[str, Any]:
    """The tensors saved at ``path``: a plain state dict, or one under ``state_dict`` or
    ``model`` (timm's training checkpoints, ``fp.save``'s files), ``module.`` prefixes (DDP)
    dropped; read with ``weights_only=True``, so a file of pickled code is refused."""
    import torch

    if not Path(path).is_file():
        raise ConfigError(f"timm.checkpoint = {path!r}: there is no such file.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ConfigError(f"timm.checkpoint = {path!r} cannot be read as plain tensors "
                          f"({first_line(exc)}).") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not (isinstance(state, dict) and state
            and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise ConfigError(f"timm.checkpoint = {path!r} holds no state dict (a dict of tensors, "
                          f"as torch.save(model.state_dict(), PATH) writes).")
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def classifier_keys(network: nn.Module) -> set[str]:
    """The state-dict keys of the classifier that timm's pretrained config names."""
    names = (getattr(network, "pretrained_cfg", None) or {}).get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return {k for k in network.state_dict() if any(k.startswith(n + ".") for n in names)}


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].rstrip(".") if text else type(exc).__name__
