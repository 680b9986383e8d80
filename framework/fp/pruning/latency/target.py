"""A latency target: prune until the model runs in at most (1 - target) of the DENSE model's time.

Latency has no per-channel estimate the way filters, parameters and FLOPs have, so an event keeps
the measure's global ranking (``select``, ``round_to`` included) and chooses how many of the
ranked slots go by timing pruned copies of the model (``copy.deepcopy``, then the same selection
and surgery): a bisection over the candidate counts, at most ``probes`` timings of candidates in
all. A model pruned before is timed as it is first (fast enough: nothing goes); then the most the
cap allows (too slow: a PruningError, the model untouched). Decisions compare medians. The
choice, the fewest slots whose timing met the goal, is timed again between two timings of the
dense model before it is taken; if it fails that, it counts as too slow and the search goes on
above it. When the probes run out, the fewest slots whose latest timing met the goal go.

``latency_fn(model) -> (seconds, noise)`` is injected: the median time of a forward pass and the
relative spread of the timings (``measured_latency`` wraps ``fp.timing.time_forward``).
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import torch
from torch import Tensor, nn

from fp import timing
from fp.errors import ConfigError, PruningError
from fp.pruning.arch import build_model
from fp.pruning.filters import dense_widths_of, unreachable
from fp.pruning.groups import channel_groups
from fp.pruning.latency.search import DEFAULT_PROBES, MIN_PROBES, LatencyFn, LatencyProbe, Search
from fp.pruning.select import (DEFAULT_MAX_FRACTION, check_fraction, check_round_to, check_target,
                               ranked_slots, rounded_steps, steps_selection)
from fp.pruning.stats import filter_widths
from fp.pruning.surgery import PruneResult, check_surgery, prune_channels


@dataclass
class LatencyPrune:
    """What a latency event did: the pruning, every probe, the dense and final latencies, and
    ``candidate``, the count of rounding steps taken (what other DDP ranks apply untimed)."""

    result: PruneResult
    target: float
    candidate: int
    dense_latency_s: float = float("nan")
    final_latency_s: float = float("nan")
    final_noise: float = float("nan")
    probes: list[LatencyProbe] = field(default_factory=list)

    def records(self) -> list[dict[str, Any]]:
        return [asdict(p) for p in self.probes]

    def summary(self) -> dict[str, Any]:
        return {"dense_latency_s": self.dense_latency_s, "final_latency_s": self.final_latency_s,
                "latency_ratio": self.final_latency_s / self.dense_latency_s,
                "latency_noise": self.final_noise, "latency_probes": len(self.probes)}


def prune_to_latency(model: nn.Module, filter_scores: dict[str, Tensor], target: float, *,
                     example_inputs: Tensor, latency_fn: LatencyFn | None = None,
                     dense: dict[str, Any] | None = None, dense_model: nn.Module | None = None,
                     max_fraction: float = DEFAULT_MAX_FRACTION, protected: Iterable[str] = (),
                     carry: dict[str, Tensor] | None = None, round_to: int = 1,
                     probes: int = DEFAULT_PROBES, candidate: int | None = None) -> LatencyPrune:
    """Remove the lowest-ranked slots until ``latency_fn`` times ``model`` at most (1 - ``target``)
    of the dense model (``dense_model``; by default ``dense_reference(model, dense)``). With
    ``candidate`` (another rank's choice) nothing is timed: that many rounding steps go."""
    check_target(target, "latency")
    check_fraction(max_fraction)
    check_round_to(round_to)
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < MIN_PROBES:
        raise ConfigError(f"a latency target needs at least {MIN_PROBES} probes, not {probes!r}.")
    if latency_fn is None and candidate is None:
        raise ConfigError("a latency target needs latency_fn(model) -> (seconds, noise).")
    protected = tuple(protected)
    widths = dense_widths_of(model, dense or {})
    check_surgery(model, example_inputs, protected)
    groups = channel_groups(model, example_inputs, protected=protected)
    steps = rounded_steps(groups, ranked_slots(groups, filter_scores, widths, max_fraction,
                                               round_to), round_to)

    def pruned_copy(m: int) -> tuple[nn.Module, int]:
        """A copy of ``model`` without the first ``m`` steps' slots, and how many slots that is."""
        trial = copy.deepcopy(model)
        trial_groups = channel_groups(trial, example_inputs, protected=protected)
        if [(g.root, g.width) for g in trial_groups] != [(g.root, g.width) for g in groups]:
            raise PruningError(f"a copy of {type(model).__name__} traces to other channel groups "
                               f"than the model, so pruned copies cannot stand in for it.")
        prune_channels(trial, trial_groups, steps_selection(groups, steps[:m]))
        return trial, sum(len(slots) for _, slots in steps[:m])

    widths_now, search = filter_widths(model), None
    if candidate is None:
        reference = dense_reference(model, dense) if dense_model is None else dense_model
        search = Search(latency_fn, reference, target, probes, pruned_copy)
        candidate = search.run(len(steps), known_slow=target > 0 and widths_now == widths)
        if candidate is None:
            raise unreachable(target, "latency", max_fraction, search.reachable(len(steps)),
                              round_to)
    elif not 0 <= candidate <= len(steps):
        raise PruningError(f"candidate {candidate} is not one of this event's 0..{len(steps)}: "
                           f"the ranks' scores or models differ.")
    if candidate:
        result = prune_channels(model, groups, steps_selection(groups, steps[:candidate]),
                                carry=carry)
    else:  # fast enough already: untouched
        result = PruneResult(widths_before=widths_now, widths_after=widths_now,
                             carried=dict(carry or {}))
    if search is None:
        return LatencyPrune(result, target, candidate)
    accepted = search.last[candidate]
    accepted.accepted = True
    return LatencyPrune(result, target, candidate, accepted.dense_latency_s, accepted.latency_s,
                        accepted.noise, search.probes)


def dense_reference(model: nn.Module, dense: dict[str, Any] | None = None) -> nn.Module:
    """The dense model to time against: a copy of ``model`` while it is still dense, otherwise
    its architecture rebuilt from ``model.fp_arch`` on the device and dtype of its parameters."""
    widths = dense_widths_of(model, dense or {})
    if filter_widths(model) == widths:
        return copy.deepcopy(model)
    arch = getattr(model, "fp_arch", None)
    rebuilt = build_model(arch["name"], **arch.get("kwargs", {})) if arch else None
    if rebuilt is None or filter_widths(rebuilt) != widths:
        raise ConfigError("a latency target on a model pruned before needs its dense model: pass "
                          "dense_model= (its architecture rebuilt from fp_arch does not match).")
    param = next(model.parameters(), None)
    if param is not None:
        rebuilt.to(param.device, param.dtype)
    return rebuilt.train(model.training)


#: a confirmation (dense and candidate interleaved) times this many times longer than a search probe
CONFIRM_TIME = 4


def measured_latency(example: Tensor, batch: int = 1, device: str | torch.device | None = None,
                     **options: Any) -> LatencyFn:
    """A ``latency_fn`` that times a forward pass of ``example``'s first sample repeated to
    ``batch`` on ``device`` (None: the model's) with ``fp.timing.time_forward``; its
    ``interleaved`` times the dense model and a candidate interleaved
    (``fp.timing.time_forward_pair``), ``CONFIRM_TIME`` times as long for a confirmation. ``options`` go to both (dtype, channels_last, warmup,
    repeats, min_time_s)."""

    def where(model: nn.Module) -> str | torch.device:
        param = next(model.parameters(), None)
        return device if device is not None else (param.device if param is not None else "cpu")

    def latency_fn(model: nn.Module) -> tuple[float, float]:
        measured = timing.time_forward(model, example, batch, device=where(model), **options)
        return measured.median_s, measured.spread

    def interleaved(dense: nn.Module, model: nn.Module, confirm: bool = False
                    ) -> tuple[tuple[float, float], ...]:
        # a confirmation decides what is accepted: it takes CONFIRM_TIME times the time of a
        # search timing, since one pair's ratio varies by ±7% on a quiet 2-core host
        seconds = options.get("min_time_s", timing.PAIR_TIME_S) * (CONFIRM_TIME if confirm else 1)
        pair = timing.time_forward_pair(dense, model, example, batch, device=where(model),
                                        **{**options, "min_time_s": seconds})
        return tuple((t.median_s, t.spread) for t in pair)

    latency_fn.interleaved = interleaved
    return latency_fn


