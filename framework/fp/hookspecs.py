"""Every hook a plugin may implement. These docstrings are the plugin author's reference.

A plugin is a module or object with functions marked ``@fp.hookimpl`` whose names match the
hooks below. Built-in plugins (``fp_builtins.*``) use exactly these hooks; the engine never names a
particular measure, architecture, dataset or logger.

Registration hooks return lists of classes; each class has a string ``name`` that becomes its
registry key and its gin configurable name. Lifecycle hooks receive the live :class:`fp.run.Run`; unless
a hook says otherwise its return value is ignored.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from fp.run import PruneEvent, Run
    from fp.scoring import ScoreContext
    import torch

hookspec = pluggy.HookspecMarker("fp")
hookimpl = pluggy.HookimplMarker("fp")


# --- registration -------------------------------------------------------------------------------

@hookspec
def fp_register_measures() -> list[type]:
    """Return importance-measure classes (subclasses of :class:`fp.Measure`).

    Each class needs a unique ``name``; its constructor arguments become gin-bindable
    (``snip.temperature = 5.0``) and ``prune.measure = "<name>"`` selects it.
    """


@hookspec
def fp_register_architectures() -> list[type]:
    """Return architecture classes: callables ``cls(num_classes=..., in_channels=..., **kwargs)``
    that build an ``nn.Module`` (usually the ``nn.Module`` subclass itself), each with a ``name``.

    ``model.architecture = "<name>"`` selects one; other constructor arguments are gin-bindable.
    """


@hookspec
def fp_register_datasets() -> list[type]:
    """Return dataset classes (subclasses of :class:`fp.Dataset`), each with a ``name``.

    ``data.dataset = "<name>"`` selects one; constructor arguments (root, download, ...) are
    gin-bindable.
    """


@hookspec
def fp_register_schedules() -> list[type]:
    """Return pruning-schedule classes (subclasses of :class:`fp.Schedule`), each with a ``name``.

    ``prune.schedule = "<name>"`` selects one.
    """


# --- lifecycle ----------------------------------------------------------------------------------

@hookspec
def run_start(run: "Run") -> None:
    """Called once the model, data and optimizer are built and the operative config is written,
    before the first training step (also when a run resumes; ``run.resumed`` tells which)."""


@hookspec
def before_prune(run: "Run", event: "PruneEvent") -> None:
    """Called before each prune event scores the model. ``event.target`` is the cumulative fraction
    to reach; ``event.ctx`` is the :class:`fp.scoring.ScoreContext` the measure will use (its gradients
    are computed once and shared, so diagnostics may read them here at no extra cost)."""


@hookspec(firstresult=True)
def score(run: "Run", event: "PruneEvent", scores: dict[str, "torch.Tensor"]) -> Any:
    """Called with the measure's scores (filter or weight granularity, per parameter name) before
    ranking. Return ``None`` to only observe them, or a dict of the same keys and shapes to replace
    them (score tracking, biasing); the first plugin returning non-None wins."""


@hookspec
def after_prune(run: "Run", event: "PruneEvent") -> None:
    """Called after the surgery (or masking) and the optimizer rebuild. ``event.removed`` maps each
    pruned parameter name to the removed output-channel indices (filter granularity) and
    ``event.widths_before`` / ``event.widths_after`` give per-layer widths."""


@hookspec
def after_step(run: "Run", step: int, loss: "torch.Tensor") -> None:
    """Called after every optimizer step with the global step count (1-based) and the batch loss
    (a tensor, not synchronised: call ``.item()`` only when you need it, it stalls a GPU)."""


@hookspec
def after_epoch(run: "Run", epoch: int, metrics: dict[str, float]) -> None:
    """Called after each epoch's evaluation with the epoch number (1-based) and its metrics
    (train_loss, train_acc, test_loss, test_acc, lr, params, flops, filters_kept, ...)."""


@hookspec
def log_scalars(run: "Run", scalars: dict[str, float], step: int) -> None:
    """Scalars a plugin publishes (``run.log_scalars``), tag -> value at global optimizer step
    ``step``. Tags are ``section/name``; per-layer ones ``fp.run.layer_tag(weight, quantity)``.
    The TensorBoard plugin writes them; another logger may implement this hook too."""


@hookspec
def run_end(run: "Run", summary: dict[str, Any]) -> None:
    """Called once when training finishes, with the summary that goes to ``summary.json``."""
