"""One prune event, the same code whoever asks for it.

``fp.prune`` and every prune event of a run call ``prune_event`` with the model, the measure,
the data to score on and the ``PruneOptions`` (a run's ``prune.*`` settings, ``fp.prune``'s
keyword arguments). It scores the model, hands the scores to ``rescore`` (a run's ``score``
hook), then, at filter granularity, removes the lowest-ranked filters until the target of the
dense model's filters, parameters, FLOPs or latency is gone (masking the filters that feed
residual adds with ``residual="masked"``), or, at weight granularity, masks the lowest-ranked
weights (``model.fp_masks``, cumulative). It returns the model, pruned in place, and a
``PruneRecord`` of what it did.

What only a run has stays in ``fp.engine.prune_event``: drawing the scoring samples, the hooks,
rank 0's latency choice shared with the other ranks, the records in metrics.jsonl and the
optimizer rebuilt for the pruned model.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from torch import Tensor, nn

from fp.attention import expose_heads
from fp.errors import ConfigError, DataError, FpError, PruningError
from fp.measure import Measure
from fp.nn import FILTER, WEIGHT, check_granularity
from fp.pruning.filters import prune_filters
from fp.pruning.latency.search import DEFAULT_PROBES, LatencyFn
from fp.pruning.latency.target import LatencyPrune, prune_to_latency
from fp.pruning.masks import apply_masks, masks_of, set_masks, sparsity, weight_masks
from fp.pruning.residual import check_residual
from fp.pruning.select import DEFAULT_MAX_FRACTION, check_fraction, check_target
from fp.pruning.stats import dense_stats
from fp.pruning.surgery import PruneResult
from fp.pruning.trace import failed_in, reason
from fp.scoring import ScoreContext, score

Scores = dict[str, Tensor]


@dataclass(frozen=True)
class PruneOptions:
    """How a prune event ranks and removes: no layer loses more than ``max_fraction`` of its
    dense width, ``protected`` module-name prefixes (and the output layer) are never pruned, a
    pruned layer keeps a multiple of ``round_to`` filters, ``residual`` says how channels that
    feed a residual add go ("tied" or "masked", ``fp.pruning.residual``), ``temperature`` is the
    measure's T (None: the measure's own, or a given ScoreContext's), and a latency target times
    at most ``latency_probes`` pruned candidates."""

    granularity: str = FILTER
    target_type: str = "filters"
    max_fraction: float = DEFAULT_MAX_FRACTION
    protected: tuple[str, ...] = ()
    round_to: int = 1
    residual: str = "tied"
    temperature: float | None = None
    latency_probes: int = DEFAULT_PROBES

    def __post_init__(self) -> None:
        object.__setattr__(self, "protected", tuple(self.protected))

    def check(self, target: float) -> None:
        """Refuse, in one sentence, a target or a combination of options no event can prune by."""
        check_target(target, self.target_type)
        check_fraction(self.max_fraction)
        check_granularity(self.granularity)
        check_residual(self.residual)
        if self.residual == "masked" and (self.granularity == WEIGHT
                                          or self.target_type == "latency"):
            raise ConfigError("residual='masked' needs granularity='filter' and a filters, params "
                              "or flops target: masks neither act on single weights nor save "
                              "latency.")
        if self.target_type == "latency" and self.granularity == WEIGHT:
            raise ConfigError("a latency target needs granularity='filter': masked weights do not "
                              "make the model faster.")


@dataclass
class PruneRecord:
    """What one prune event did: the scores it ranked by (after ``rescore``); at filter
    granularity the surgery's ``result`` (removed and masked filters, widths before and after,
    the ``carry`` tensors pruned alike) and, for a latency target, the search (``latency``: its
    probes, the dense and final latencies, the ``candidate`` other ranks apply); at weight
    granularity the model's masks afterwards and the fraction of prunable weights they mask."""

    target: float
    granularity: str
    scores: Scores
    result: PruneResult = field(default_factory=PruneResult)
    masks: Scores = field(default_factory=dict)
    sparsity: float | None = None
    latency: LatencyPrune | None = None

    @property
    def pruned(self) -> dict[str, Tensor]:
        """Weight name -> the filters the event took from it: removed, or masked in place
        (``residual="masked"``; a masked filter is a pruned filter of its layer too)."""
        return {**self.result.removed, **self.result.masked}


def prune_event(model: nn.Module, measure: str | Measure, data: Iterable | ScoreContext,
                target: float, options: PruneOptions = PruneOptions(), *,
                example_inputs: Tensor | None = None, dense: dict | None = None,
                dense_model: nn.Module | None = None, carry: Scores | None = None,
                latency_fn: LatencyFn | None = None,
                candidate: int | Callable[[], int] | None = None,
                rescore: Callable[[Scores], Scores] | None = None) -> tuple[nn.Module, PruneRecord]:
    """Score ``model`` with ``measure`` on ``data`` and prune it in place to the cumulative
    ``target`` (see the module docstring); returns the model and the event's record.

    ``data`` is the scoring batches, or a ``ScoreContext`` built on ``model`` (a run's: seeded,
    with its Hessian-gradient and layout settings). ``example_inputs`` trace the model (default:
    the first example of the first batch). ``dense`` holds the dense model's statistics that
    targets are fractions of (default: the model's own now, ``dense_stats``, with the FLOPs
    counted for a FLOP target only). ``carry`` tensors, keyed and shaped like parameters (SGD
    momentum), are pruned like them (``record.result.carried``).

    A latency target times pruned copies with ``latency_fn(model) -> (seconds, noise)`` against
    ``dense_model`` (default: ``fp.pruning.dense_reference``). ``candidate`` skips the timing and
    takes that many of the ranked steps: another rank's choice, or a function that returns it
    once this process has scored (a rank waits there for rank 0's).
    """
    options.check(target)
    context = data if isinstance(data, ScoreContext) else None
    batches = [] if context is not None else list(data or ())
    if example_inputs is None:
        first = context.batches if context is not None else batches
        if not first:
            raise DataError("a prune event needs at least one batch (or example_inputs) to trace "
                            "the model.")
        example_inputs = first[0][0][:1]
    expose_heads(model)  # nn.MultiheadAttention -> HeadAttention: same function, prunable heads
    with stage(model, f"scoring it with {measure_name(measure)}"), unfused_attention(model):
        if context is not None:
            temperature = (context.temperature if options.temperature is None
                           else options.temperature)
            scores = score(None, measure, None, granularity=options.granularity,
                           temperature=temperature, ctx=context)
        else:
            scores = score(model, measure, batches, granularity=options.granularity,
                           temperature=options.temperature)
    if rescore is not None:
        scores = rescore(scores)
    record = PruneRecord(target=target, granularity=options.granularity, scores=scores)
    if options.target_type == "latency" and callable(candidate):
        candidate = candidate()  # waits for rank 0: not part of pruning's own failures
    with stage(model, "pruning it"):
        return model, pruned(model, record, target, options, example_inputs=example_inputs,
                             dense=dense, dense_model=dense_model, carry=carry,
                             latency_fn=latency_fn, candidate=candidate)


def pruned(model: nn.Module, record: PruneRecord, target: float, options: PruneOptions, *,
           example_inputs: Tensor, dense: dict | None, dense_model: nn.Module | None,
           carry: Scores | None, latency_fn: LatencyFn | None,
           candidate: int | None) -> PruneRecord:
    """``prune_event``'s second half: ``model`` masked or pruned by ``record.scores``, and the
    record filled in."""
    scores = record.scores
    if options.granularity == WEIGHT:
        masks = weight_masks(scores, target, protected=options.protected,
                             current=masks_of(model) or None, max_fraction=options.max_fraction)
        set_masks(model, masks)
        apply_masks(model, masks)
        record.masks, record.sparsity = masks, sparsity(model, masks)
        return record
    if dense is None:  # the FLOP count is a forward pass: only a FLOP target reads it
        dense = dense_stats(model, example_inputs, flops=options.target_type == "flops")
    common = dict(example_inputs=example_inputs, dense=dense, max_fraction=options.max_fraction,
                  protected=options.protected, carry=carry, round_to=options.round_to)
    if options.target_type == "latency":
        done = prune_to_latency(model, scores, target, latency_fn=latency_fn,
                                dense_model=dense_model, probes=options.latency_probes,
                                candidate=candidate, **common)
        record.result, record.latency = done.result, done
    else:
        record.result = prune_filters(model, scores, target, target_type=options.target_type,
                                      residual=options.residual, **common)
    return record


@contextlib.contextmanager
def unfused_attention(model: nn.Module) -> Iterator[None]:
    """Score with every attention module that can choose (timm's ``fused_attn``) computing its
    plain products instead of ``scaled_dot_product_attention``: the same function, but one whose
    gradient has a gradient, which Hessian-based measures (grasp, grad_norm) need and the fused
    kernels do not have. Each module's choice is given back afterwards."""
    fused = [m for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)]
    choices = [m.fused_attn for m in fused]
    for module in fused:
        module.fused_attn = False
    try:
        yield
    finally:
        for module, choice in zip(fused, choices):
            module.fused_attn = choice


def measure_name(measure: str | Measure) -> str:
    return measure if isinstance(measure, str) else getattr(measure, "name", type(measure).__name__)


@contextlib.contextmanager
def stage(model: nn.Module, doing: str) -> Iterator[None]:
    """Turn any failure of the block but an fp error into a PruningError that names what the
    event was ``doing``, the module whose forward broke (if one did) and the reason: scoring,
    analysis and surgery run the user's model and torch-pruning on it, and whatever they raise
    is one sentence for the user (``fp --debug`` shows the traceback)."""
    try:
        yield
    except FpError:
        raise
    except Exception as exc:
        raise PruningError(f"{type(model).__name__} could not be pruned: {doing} failed"
                           f"{failed_in(model, exc)} ({reason(exc)}).") from exc


__all__ = ["PruneOptions", "PruneRecord", "prune_event"]
