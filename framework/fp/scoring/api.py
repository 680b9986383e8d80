"""``fp.score``: a measure's per-filter or per-weight importance scores of a model."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import torch
from torch import Tensor, nn

from fp.errors import ConfigError, DataError, PluginError
from fp.measure import Measure
from fp.precision import full_fp32
from fp.scoring.context import ScoreContext
from fp.nn import FILTER, check_granularity, eval_mode

if TYPE_CHECKING:  # pragma: no cover
    from fp.manager import Manager


def score(model: nn.Module | None, measure: str | Measure | type[Measure],
          batches: Iterable | None, *, granularity: str = FILTER,
          temperature: float | None = None, ctx: ScoreContext | None = None,
          manager: Manager | None = None) -> dict[str, Tensor]:
    """Importance of ``model``'s conv/linear weights by ``measure``; higher = more important.

    ``granularity="filter"`` gives one score per output channel, "weight" one per weight, keyed by
    parameter name. ``temperature=None`` uses the measure's own T. Pass ``ctx`` to share gradient
    statistics between measures (its model and batches are used); ``manager`` resolves measure
    names (the shared one of ``fp.manager.shared_manager`` otherwise). Scores are detached
    float32 on the weights' device; a measure may leave weights out (bn_* skip layers that no
    BatchNorm follows). The statistics are computed in full fp32 on a GPU too (no TF32, see
    ``fp.precision``) unless ``ctx.tf32``.
    """
    check_granularity(granularity)
    measure = resolve_measure(measure, manager)
    if ctx is None:  # g and E[g²] in its gradient pass only if the measure may ask for them
        ctx = ScoreContext(model, batches, grad=measure.uses_grad, grad_sq=measure.uses_grad_sq)
    elif model is not None and model is not ctx.model:
        raise ConfigError("the ScoreContext passed to score() was built for another model.")
    view = ctx.for_temperature(measure.temperature if temperature is None else temperature)
    if measure.needs_data and not view.batches:
        raise DataError(f"measure {measure.name!r} needs scoring batches, and none were given.")
    # in full fp32 (no TF32 on a GPU) unless the context asks otherwise; the statistics are
    # computed lazily, inside the measure's call
    with eval_mode(view.model), full_fp32(not view.tf32):
        raw = measure.filter_scores(view) if granularity == FILTER else measure(view)
    return _checked_scores(raw, view.weights, granularity, measure.name)


def resolve_measure(measure: str | Measure | type[Measure],
                    manager: Manager | None = None) -> Measure:
    """A Measure instance from a registered name (built through gin, so bindings apply), a
    Measure subclass or an instance. Only a name needs the plugin host (``fp.manager``),
    imported here alone: the rest of ``fp.scoring`` never reads a registry."""
    if isinstance(measure, Measure):
        return measure
    if isinstance(measure, type) and issubclass(measure, Measure):
        return measure()
    if isinstance(measure, str):
        from fp.manager import build_registered

        return build_registered("measures", measure, manager)
    raise ConfigError(f"measure must be a registered name or an fp.Measure, not {measure!r}.")


def _checked_scores(raw: dict[str, Tensor], weights: dict[str, nn.Parameter], granularity: str,
                    measure_name: str) -> dict[str, Tensor]:
    scores = {}
    for name, value in raw.items():
        if name not in weights:
            raise PluginError(f"measure {measure_name!r} scored {name!r}, which is not one of the "
                              f"weights being scored.")
        weight = weights[name]
        shape = weight.shape[:1] if granularity == FILTER else weight.shape
        if tuple(value.shape) != tuple(shape):
            raise PluginError(f"measure {measure_name!r} gave {name!r} {granularity} scores of "
                              f"shape {tuple(value.shape)}; expected {tuple(shape)}.")
        scores[name] = value.detach().to(device=weight.device, dtype=torch.float32)
    return scores
