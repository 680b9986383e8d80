"""Tracing a model for torch-pruning, with every failure and every runaway analysis pinned on the
module it happens in.

Attention modules are traced as opaque single nodes (``opaque``): their inputs and
output, not the reshapes inside them. torch-pruning follows a group's channel indices through
each view and reshape; where a reshape mixes channels with another dimension (a window
partition, a split into heads) the index lists grow by that dimension on every pass and the
grouping never settles (torchvision's Swin without this grows them 32-fold a pass, to millions).
Outside attention that can still happen, so the analysis is bounded: no index list may outgrow
``SLACK`` times the longest dim of any tensor the trace saw (a real list indexes one dim), at
most ``MAX_INDEX_WORK`` indices are mapped through reshapes, concatenations and slices in all,
no group collects more than ``GROWTH`` times the model's dependencies (a loop that never settles,
as an in-place add into a slice of channels makes, grows a group without end and each addition
costs more than the last), and grouping stops after ``MAX_SECONDS``. Past any of them a
PruningError names the module whose operations the indices were going through.
"""
from __future__ import annotations

import collections
import contextlib
import threading
import time
from typing import Any, Iterator

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch_pruning.dependency import index_mapping
from torch_pruning.dependency.group import Group

from fp.errors import PruningError
from fp.nn import eval_mode
from fp.pruning.opaque import opaque

#: an index list longer than this many times the longest traced dim (but batch) has run away
SLACK = 2
#: channel indices torch-pruning may push through index mappings while grouping one model
MAX_INDEX_WORK = 10_000_000
#: seconds torch-pruning may spend grouping one model
MAX_SECONDS = 30.0
#: one group may collect this many dependencies per dependency of the traced model: a group
#: reaches each dependency a few times at most (once per tied path), while a loop that never
#: settles (an in-place write into a slice of channels) adds them without end, each addition
#: checked against all before it
GROWTH = 4

_MAPPINGS = [cls for name, cls in vars(index_mapping).items()
             if isinstance(cls, type) and name.endswith("IndexMapping")]


class ModuleRecorder(TorchFunctionMode):
    """During one forward: the module each autograd node was made in (innermost first), and the
    module whose forward was running when an exception escaped."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.names = {module: name for name, module in model.named_modules()}
        self.stack: list[nn.Module] = []
        self.owner: dict[Any, nn.Module] = {}
        self.largest = 1  # the longest dim (but the first) of any tensor an operation made
        self.hooks = [h for m in self.names for h in (m.register_forward_pre_hook(self.enter),
                                                      m.register_forward_hook(self.leave))]

    def enter(self, module: nn.Module, args: Any) -> None:
        self.stack.append(module)

    def leave(self, module: nn.Module, args: Any, output: Any) -> None:
        self.stack.pop()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.stack:
            for tensor in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(tensor, Tensor):
                    dims = tensor.shape[1:] if tensor.dim() > 1 else (tensor.numel(),)
                    self.largest = max(self.largest, *dims)
                    if tensor.grad_fn is not None:
                        self.owner.setdefault(tensor.grad_fn, self.stack[-1])
        return out

    def parent(self, module: nn.Module) -> nn.Module | None:
        path = self.names[module].rpartition(".")[0]
        return next((m for m, name in self.names.items() if name == path), None)

    def close(self) -> None:
        for hook in self.hooks:
            hook.remove()

    def describe(self, module: nn.Module | None) -> str:
        if module is None or module not in self.names:
            return "an operation outside any submodule"
        name = self.names[module] or "the top-level module"
        return f"{name!r} ({type(module).__name__})"


def build_graph(model: nn.Module, example_inputs: Tensor) -> tp.DependencyGraph:
    """torch-pruning's dependency graph; a clear error naming the module a failing trace broke
    in. ``graph.fp_recorder`` keeps the module of each traced operation for later errors."""
    def forward(module: nn.Module, inputs: Tensor) -> Any:
        outputs = module(inputs)
        if not any(t.grad_fn is not None for t in tp.utils.flatten_as_list(outputs)):
            raise RuntimeError("its output does not reach its layers through autograd "
                               "(a forward under torch.no_grad() or .detach()?)")
        return outputs

    recorder = ModuleRecorder(model)
    try:
        with torch.enable_grad(), eval_mode(model), opaque(model) as pruners, recorder:
            graph = tp.DependencyGraph().build_dependency(
                model, example_inputs, forward_fn=forward, customized_pruners=pruners,
                verbose=False)
    except Exception as exc:  # tracing runs the user's forward: any failure is the model's
        where = f" (in {recorder.describe(recorder.stack[-1])})" if recorder.stack else ""
        raise PruningError(f"torch-pruning cannot trace {type(model).__name__} for pruning"
                           f"{where}: {reason(exc)}.") from exc
    finally:
        recorder.close()
    graph.fp_recorder = recorder
    return graph


def failed_in(model: nn.Module, exc: BaseException) -> str:
    """' in <name> (<class>)' for the innermost module of ``model`` whose code was running when
    ``exc`` was raised (read from its traceback: no hooks, nothing left on the model), or ''
    when none was (a failure inside autograd's backward, say)."""
    names = {id(module): (name, module) for name, module in model.named_modules()}
    found = None
    tb = exc.__traceback__
    while tb is not None:
        owner = names.get(id(tb.tb_frame.f_locals.get("self")))
        found = owner or found
        tb = tb.tb_next
    if found is None:
        return ""
    name, module = found
    return f" in {name or 'the top-level module'!r} ({type(module).__name__})"


def reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class _Exhausted(Exception):
    def __init__(self, mapping: Any, what: str, node: Any = None):
        super().__init__(what)
        self.mapping, self.what, self.node = mapping, what, node


class Stopped(Exception):
    """A traversal reached an index mapping of a kind ``stopping_at`` names."""

    def __init__(self, mapping: Any):
        super().__init__(type(mapping).__name__)
        self.mapping = mapping


class _Meter(threading.local):
    depth = 0
    work = 0
    longest = 0
    deadline = 0.0
    items = 0  # the most dependencies one group may collect
    stops: tuple[type, ...] = ()


_METER = _Meter()
_LOCK = threading.Lock()


def _metered(call):
    def metered(self, idxs):
        if isinstance(self, _METER.stops):
            raise Stopped(self)
        out = call(self, idxs)
        if _METER.depth:
            _METER.work += len(idxs) + len(out)
            if len(out) > _METER.longest:
                raise _Exhausted(self, f"an index list of {len(out):,} channels, longer than "
                                       f"any dim it could index")
            if _METER.work > MAX_INDEX_WORK:
                raise _Exhausted(self, f"more than {MAX_INDEX_WORK:,} channel indices")
            if time.perf_counter() > _METER.deadline:
                raise _Exhausted(self, f"more than {MAX_SECONDS:g} s")
        return out
    metered.fp_metered = True
    return metered


def _counted(add_dep):
    def counted(self, dep, idxs):
        add_dep(self, dep, idxs)
        if _METER.depth and len(self._group) > _METER.items:
            raise _Exhausted(None, f"a group of more than {_METER.items:,} dependencies, "
                                   f"{GROWTH} per dependency of the model", node=dep.target)
    counted.fp_metered = True
    return counted


def _install() -> None:
    with _LOCK:
        for cls in _MAPPINGS:
            if not getattr(cls.__call__, "fp_metered", False):
                cls.__call__ = _metered(cls.__call__)
        if not getattr(Group.add_dep, "fp_metered", False):
            Group.add_dep = _counted(Group.add_dep)


@contextlib.contextmanager
def stopping_at(kinds: tuple[type, ...]) -> Iterator[None]:
    """Within the block, a torch-pruning traversal that reaches an index mapping of one of
    ``kinds`` raises ``Stopped`` at once (``groups`` drops a group through a channel split
    without tracing the rest of it)."""
    _install()
    previous, _METER.stops = _METER.stops, tuple(kinds)
    try:
        yield
    finally:
        _METER.stops = previous


@contextlib.contextmanager
def budget(graph: tp.DependencyGraph, model: nn.Module) -> Iterator[None]:
    """Run torch-pruning's grouping of ``graph`` within the analysis budget (nested calls share
    the outermost one's)."""
    _install()
    if not _METER.depth:
        recorder = getattr(graph, "fp_recorder", None)
        _METER.longest = SLACK * (recorder.largest if recorder else MAX_INDEX_WORK)
        _METER.work, _METER.deadline = 0, time.perf_counter() + MAX_SECONDS
        dependencies = sum(len(node.dependencies) for node in graph.module2node.values())
        _METER.items = GROWTH * dependencies + 64
    _METER.depth += 1
    try:
        yield
    except _Exhausted as exc:
        where = culprit(graph, exc.mapping, exc.node)
        raise PruningError(f"torch-pruning's channel analysis of {type(model).__name__} ran past "
                           f"its budget ({exc.what}) in {where}: an operation there mixes "
                           f"channels with other dimensions or writes into a slice of them, so "
                           f"its channel groups cannot be traced.") from None
    finally:
        _METER.depth -= 1


def culprit(graph: tp.DependencyGraph, mapping: Any, start: Any = None) -> str:
    """The module whose forward ran the operation that carries ``mapping`` (or the traced node
    ``start``): the nearest traced operation (breadth first) whose module is known (an op inside
    a linear layer's own forward, or a layer called from there, counts for the module that
    called it)."""
    recorder = getattr(graph, "fp_recorder", None)
    queue = collections.deque([start] if start is not None else [])
    if mapping is not None:
        queue.extend(end for node in graph.module2node.values() for dep in node.dependencies
                     if any(m is mapping for m in dep.index_mapping)
                     for end in (dep.target, dep.source))
    seen = set()
    while queue and recorder is not None:
        node = queue.popleft()
        if node in seen:
            continue
        seen.add(node)
        owner = recorder.owner.get(node.grad_fn) if node.grad_fn is not None else None
        if owner is None and isinstance(node.module, nn.Module) and node.module in recorder.names:
            owner = recorder.parent(node.module)
        if owner is not None:
            return recorder.describe(owner)
        queue.extend(node.inputs + node.outputs)
    return "an operation outside any submodule"


__all__ = ["GROWTH", "MAX_INDEX_WORK", "MAX_SECONDS", "SLACK", "ModuleRecorder",
           "Stopped", "budget", "build_graph", "failed_in", "reason", "stopping_at"]
