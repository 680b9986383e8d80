"""Saving and loading (pruned) models as plain data, never as pickled code.

A saved model is a dict of plain data: the architecture's registry name and constructor
arguments, every module's public scalar attributes (``out_channels``, ``num_features``,
``normalized_shape``, ... as surgery left them), the state dict, for weight granularity the weight
masks, for ``prune.residual = "masked"`` the filter masks, and the names of the tensors laid out
channels-last. Loading rebuilds the dense architecture from the registry, shrinks each module to
the recorded attributes and tensor shapes, loads the weights and lays each tensor out as it was
saved; ``torch.load`` runs with ``weights_only=True``, so a file carrying pickled code is
refused.
"""
from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fp.atomic import atomic_write
from fp.errors import CheckpointError, PruningError
from fp.nn import channels_last_names, to_channels_last
from fp.pruning.arch import arch_of, build_model, is_plain
from fp.pruning.heads import reconcile
from fp.pruning.filter_masks import filter_masks, set_filter_masks
from fp.pruning.trace import reason

FORMAT = "flowprune.model"
VERSION = 1


def model_state(model: nn.Module, masks: dict[str, Tensor] | None = None) -> dict[str, Any]:
    """Everything needed to rebuild ``model`` (and its weight masks) as plain data."""
    masks = masks if masks is not None else getattr(model, "fp_masks", None)
    state = {"format": FORMAT, "version": VERSION, "arch": arch_of(model),
             "attributes": module_attributes(model), "state_dict": dict(model.state_dict()),
             "masks": {name: mask.detach().bool() for name, mask in (masks or {}).items()},
             "channels_last": channels_last_names(model)}
    if filter_masks(model):
        state["filter_masks"] = {name: mask.clone() for name, mask in filter_masks(model).items()}
    if not is_plain(state):  # guards weights_only loading; module attributes are filtered already
        raise CheckpointError(f"the state of {type(model).__name__} holds something that is not "
                              f"plain data, so it cannot be saved for weights-only loading.")
    return state


def module_attributes(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Public plain-data attributes of every module: what surgery changes besides tensors."""
    record = {}
    for name, module in model.named_modules():
        attrs = {}
        for key, value in vars(module).items():
            value = tuple(value) if isinstance(value, torch.Size) else value
            if not key.startswith("_") and key != "training" and is_plain(value, tensors=False):
                attrs[key] = value
        record[name] = attrs
    return record


def model_from_state(state: Any, *, manager=None, origin: str = "the checkpoint") -> nn.Module:
    """Rebuild a model saved by ``model_state``; ``origin`` names the source in errors."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{origin} is not a model saved by flowprune.")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{origin} has model format version {state.get('version')!r}; this "
                              f"flowprune reads version {VERSION}.")
    arch = state["arch"]
    model = build_model(arch["name"], manager=manager, **arch["kwargs"])
    restore_attributes(model, state["attributes"])
    reconcile(model)  # Swin attention gets the forward that any head count suits
    try:
        reshape_tensors(model, state["state_dict"])
        model.load_state_dict(state["state_dict"])
    except (AttributeError, RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{origin} does not fit architecture {arch['name']!r}: "
                              f"{reason(exc)}.") from exc
    to_channels_last(model, state.get("channels_last", ()))  # each tensor in its saved layout
    if state.get("masks"):
        model.fp_masks = {name: mask.bool() for name, mask in state["masks"].items()}
    try:
        set_filter_masks(model, state.get("filter_masks") or {})
    except PruningError as exc:
        raise CheckpointError(f"{origin} is damaged: {exc}") from None
    return model.eval()


def restore_attributes(model: nn.Module, attributes: dict[str, dict[str, Any]]) -> None:
    modules = dict(model.named_modules())
    for name, attrs in attributes.items():
        module = modules.get(name)
        if module is None:
            continue  # load_state_dict names what does not fit
        for key, value in attrs.items():
            tensor_or_child = (key in module._parameters or key in module._buffers
                               or key in module._modules)
            if not tensor_or_child:
                setattr(module, key, value)


def reshape_tensors(model: nn.Module, state_dict: dict[str, Tensor]) -> None:
    """Give every parameter and buffer the saved shape, so the pruned weights load."""
    for key, saved in state_dict.items():
        path, _, attr = key.rpartition(".")
        module = model.get_submodule(path)
        current = getattr(module, attr, None)
        if current is not None and current.shape == saved.shape:
            continue
        blank = torch.empty(saved.shape, dtype=saved.dtype)
        if attr in module._parameters:
            frozen = current is not None and not current.requires_grad
            module._parameters[attr] = nn.Parameter(blank, requires_grad=not frozen)
        elif attr in module._buffers:
            module._buffers[attr] = blank


def save(model: nn.Module, path: str | os.PathLike, masks: dict[str, Tensor] | None = None) -> Path:
    """Write ``model`` (and its masks, default ``model.fp_masks``) to ``path`` atomically; a
    full disk or a folder without write permission is a StorageError naming ``path``."""
    path = Path(path)
    state = model_state(model, masks)
    atomic_write(path, lambda handle: torch.save(state, handle),
                 then="save the model again (any earlier file at that path is intact)")
    return path


def load(path: str | os.PathLike, *, manager=None, map_location: Any = "cpu") -> nn.Module:
    """The model saved at ``path``, rebuilt from its architecture's registry entry, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"there is no saved model at {path}.")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it reads anyway
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refused what it read
        code = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if code:
            raise CheckpointError(f"{path} holds pickled code or objects ({code.group(1)}), not "
                                  f"plain data, and was refused unread.") from None
        detail = re.search(r"WeightsUnpickler error:\s*([^.\n]+)", str(exc))
        raise CheckpointError(f"{path} is corrupt or not plain data"
                              f"{f' ({detail.group(1)})' if detail else ''}, and was refused "
                              f"unread.") from None
    except Exception as exc:  # zip and stream errors of a damaged file
        raise CheckpointError(f"{path} is corrupt or truncated ({reason(exc)}).") from None
    return model_from_state(state, manager=manager, origin=str(path))
