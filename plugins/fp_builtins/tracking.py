"""Score tracking and initialisation-distance biasing, the seed code's two scoring extras.

Both are off by default and switched on through gin:

``tracking.ema_batches = k`` (k > 0)
    During training, after every optimizer step, the first-order (snip-style) weight score
    |θ ⊙ ∇L| is read from the gradients the step already computed (``param.grad``; no extra
    forward or backward pass) and averaged with an exponential moving average over roughly the
    last k minibatches: alpha = 2 / (k + 1), ema ← ema + alpha·(score − ema), and the first
    observation starts the average. At a prune event the tracked scores replace the measure's
    one-shot scores, reduced to filters as the measure reduces (``measure.reduce``). They are used
    only when every scored weight has been tracked at its current shape; otherwise (pruning at
    initialisation, or no step since the last surgery) the one-shot scores stand, so a global
    ranking never mixes the two kinds.

``tracking.init_bias = b`` (b > 0)
    The weights are copied at the start of the run; at a prune event the score of filter p is
    multiplied by 1 + b·‖θ_p − θ_p,init‖₂ / (‖θ_p,init‖₂ + 1e-12), favouring filters that moved
    far from their initialisation. At weight granularity every weight of filter p gets its filter's
    factor. A weight whose shape changed through surgery has no channel map to its initial copy
    and keeps its unbiased scores.

The tracked averages and the initial copies live in ``run.state["tracking"]``, so checkpoints
save them and a resumed run continues where it stopped.
"""
from __future__ import annotations

import gin
import torch

import fp
from fp.errors import ConfigError
from fp.nn import FILTER, prunable_weights

#: added to the norm of the initial filter so an all-zero filter does not divide by zero
NORM_EPS = 1e-12


@gin.configurable("tracking")
def tracking(ema_batches: int = 0, init_bias: float = 0.0) -> dict[str, float]:
    """Settings of score tracking (EMA over ``ema_batches`` minibatches, 0 = off) and of the
    initialisation-distance bias (strength ``init_bias``, 0 = off)."""
    if ema_batches < 0:
        raise ConfigError(f"tracking.ema_batches = {ema_batches!r} must be at least 0 (0 = off).")
    if init_bias < 0:
        raise ConfigError(f"tracking.init_bias = {init_bias!r} must be at least 0 (0 = off).")
    return {"ema_batches": int(ema_batches), "init_bias": float(init_bias)}


def ema_alpha(ema_batches: int) -> float:
    """Smoothing factor of an EMA whose centre of mass matches a k-sample window."""
    return 2.0 / (ema_batches + 1)


@fp.hookimpl
def run_start(run) -> None:
    state = run.state.setdefault("tracking", {"ema": {}, "init": {}})
    state["settings"] = tracking()
    # a resumed run restored its initial copy from the checkpoint; the current weights are not init
    if state["settings"]["init_bias"] > 0 and not state["init"] and not run.resumed:
        state["init"] = {name: weight.detach().clone()
                         for name, weight in prunable_weights(run.model).items()}


@fp.hookimpl
def after_step(run, step: int, loss: torch.Tensor) -> None:
    state = run.state.get("tracking")
    if not state or state["settings"]["ema_batches"] == 0:
        return
    alpha = ema_alpha(state["settings"]["ema_batches"])
    averages = state["ema"]
    with torch.no_grad():
        for name, weight in prunable_weights(run.model).items():
            if weight.grad is None:
                continue
            current = (weight * weight.grad).abs()
            average = averages.get(name)
            if average is None or average.shape != current.shape:
                averages[name] = current          # first step, or the layer was just pruned
            else:
                average.lerp_(current, alpha)


@fp.hookimpl
def score(run, event, scores: dict[str, torch.Tensor]):
    state = run.state.get("tracking")
    if not state:
        return None
    settings = state["settings"]
    tracked = None
    if settings["ema_batches"] > 0:
        tracked = tracked_scores(run, event.granularity, scores)
    chosen = scores if tracked is None else tracked
    biased = bias_by_init_distance(run, chosen) if settings["init_bias"] > 0 else {}
    event.info["tracking"] = {"tracked_scores": tracked is not None, "biased": sorted(biased)}
    if tracked is None and not biased:
        return None       # leave the measure's scores to the other plugins and the engine
    return {**chosen, **biased}


def tracked_scores(run, granularity: str,
                   scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """The tracked scores at ``granularity`` for every key of ``scores``, or None when any key
    has no average at its current shape."""
    averages = run.state["tracking"]["ema"]
    result = {}
    for name, one_shot in scores.items():
        average = averages.get(name)
        if average is None:
            return None
        value = run.measure.reduce(average) if granularity == FILTER else average
        if value.shape != one_shot.shape:
            return None
        result[name] = value.to(one_shot.device, one_shot.dtype)
    return result


def bias_by_init_distance(run, scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Scores multiplied by 1 + b·(relative distance of each filter from its initial copy), for
    the weights whose shape still matches that copy."""
    strength = run.state["tracking"]["settings"]["init_bias"]
    initial = run.state["tracking"]["init"]
    weights = prunable_weights(run.model)
    biased = {}
    for name, value in scores.items():
        weight, start = weights.get(name), initial.get(name)
        if weight is None or start is None or weight.shape != start.shape:
            continue
        factor = 1.0 + strength * relative_filter_distance(weight.detach(), start)
        factor = factor.to(value.device, value.dtype)
        biased[name] = value * factor.view(-1, *([1] * (value.dim() - 1)))
    return biased


def relative_filter_distance(weight: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """‖θ_p − θ_p,init‖₂ / (‖θ_p,init‖₂ + 1e-12) per output channel p."""
    moved = (weight - start).flatten(1).norm(dim=1)
    return moved / (start.flatten(1).norm(dim=1) + NORM_EPS)
