"""One prune event seen through first-order theory: the loss and ‖g‖² just before and just after
it, the loss change a first-order expansion predicts, and how the run's measure orders filters
compared with other measures.

Everything is measured on the event's scoring batches with the model in eval mode, at the
TRAINING temperature (the loss the run optimises), whatever temperature the measure scores at.

Predicted loss change. Removing a set R of weights is, to first order, the step Δθ = −θ on R, so
ΔL ≈ gᵀΔθ = −Σ_{i∈R} θ_i g_i with θ and g taken before the event (the quantity loss preservation
keeps small). At filter granularity R is every weight of the removed filters of each pruned
conv/linear weight (``event.removed``); their bias and BatchNorm parameters, and the effect of
the vanished channel on the next layer, are not counted, so the gap between measured and
predicted change shows what the first-order picture misses. At weight granularity R is the
weights the event masked (a rewinding schedule's weight reset shows in the measured change only).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

import fp
from fp.nn import FILTER, batch_loss, eval_mode
from fp_builtins.flow.correlation import rank_correlations
from fp_builtins.flow.norms import per_filter


@dataclass
class Before:
    """What the event's diagnostics keep from the model before the surgery."""

    batches: list
    loss: float
    grad_norm_sq: float
    theta_g: dict[str, Tensor]            # θ⊙g per weight, summed per filter at filter granularity
    masks: dict[str, Tensor] = field(default_factory=dict)            # weight granularity
    compared: dict[str, dict[str, Tensor]] = field(default_factory=dict)  # measure -> filter scores


def run_context(run, batches, temperature: float) -> fp.ScoreContext:
    """A context on the run's model and device that computes as the run's prune events do (its
    layout, exact shortcuts and HVP method), so that the diagnostics never depend on a timing
    where the run does not."""
    prune = run.settings.prune
    return fp.ScoreContext(run.model, batches, temperature=temperature, device=run.device,
                           hvp_method=prune.hvp_method, hvp_memory_gb=prune.hvp_memory_gb,
                           layout=prune.scoring_layout, shortcuts=prune.scoring_shortcuts)


def observe_before(run, event, measures: dict[str, fp.Measure], temperature: float) -> Before:
    """Loss, ‖g‖² and θ⊙g of the unpruned model, plus the ``measures``' filter scores (they share
    the event context's cached gradients)."""
    batches = diagnostic_batches(run, event)
    ctx = (event.ctx if event.ctx is not None and batches is event.ctx.batches
           else run_context(run, batches, temperature))
    grad = ctx.grad(temperature)
    theta_g = {n: w.detach() * grad[n] for n, w in ctx.weights.items() if grad.get(n) is not None}
    by_filter = event.granularity == FILTER
    if by_filter:
        theta_g = {n: per_filter(v) for n, v in theta_g.items()}
    compared = ({name: fp.score(None, m, None, ctx=ctx) for name, m in measures.items()}
                if by_filter else {})
    return Before(batches=batches, loss=mean_loss(run.model, batches, temperature),
                  grad_norm_sq=grad_norm_sq(grad), theta_g=theta_g,
                  masks={n: m.clone() for n, m in run.masks.items()}, compared=compared)


def observe_after(run, event, before: Before, temperature: float) -> dict:
    """The event's record: before/after values, measured and predicted loss change, and at filter
    granularity the per-layer pruned fractions and the rank correlations."""
    after = run_context(run, before.batches, temperature)
    loss_after = mean_loss(run.model, before.batches, temperature)
    removed = (event.removed if event.granularity == FILTER
               else newly_masked(before.masks, run.masks))
    record = {"temperature": temperature, "samples": sum(len(y) for _, y in before.batches),
              "loss_before": before.loss, "loss_after": loss_after,
              "loss_change": loss_after - before.loss,
              "loss_change_predicted": predicted_loss_change(before.theta_g, removed),
              "grad_norm_sq_before": before.grad_norm_sq,
              "grad_norm_sq_after": grad_norm_sq(after.grad())}
    if event.granularity == FILTER:
        record["pruned_frac"] = pruned_fractions(event.widths_before, event.widths_after)
        record["rank_correlation"] = rank_correlations(event.scores, before.compared)
    return record


def diagnostic_batches(run, event) -> list:
    """The event's scoring batches. A data-free measure is scored on a single example, so then
    the batches a data-reading measure would get at this event, drawn by the engine's own rule."""
    if run.measure.needs_data and event.ctx is not None:
        return event.ctx.batches
    return run.scoring_batches(event.index, needs_data=True)


@torch.no_grad()
def mean_loss(model: torch.nn.Module, batches: list, temperature: float) -> float:
    """The scoring loss, whose gradient is ``ScoreContext.grad``: the cross-entropy of logits/T,
    a mean over samples (Σ_b n_b L_b / Σ_b n_b)."""
    with eval_mode(model):
        losses = [batch_loss(model, x, y, temperature) * len(y) for x, y in batches]
    return float(torch.stack(losses).sum() / sum(len(y) for _, y in batches))


def grad_norm_sq(grad: dict[str, Tensor]) -> float:
    """‖g‖² over every parameter that has a gradient."""
    return float(sum((g.double() ** 2).sum() for g in grad.values()))


def predicted_loss_change(theta_g: dict[str, Tensor], removed: dict[str, Tensor]) -> float:
    """−Σ θ_i g_i over the removed entries: output-channel indices or boolean masks per weight."""
    total = 0.0
    for name, which in removed.items():
        if name in theta_g:
            total -= float(theta_g[name][which.to(theta_g[name].device)].double().sum())
    return total


def newly_masked(before: dict[str, Tensor], after: dict[str, Tensor]) -> dict[str, Tensor]:
    """Weight name -> the entries masked by this event (kept before, masked after)."""
    return {name: ~mask.bool() & (before[name].bool() if name in before else True)
            for name, mask in after.items()}


def pruned_fractions(widths_before: dict[str, int],
                     widths_after: dict[str, int]) -> dict[str, float]:
    """Weight name -> fraction of its output channels this event removed."""
    return {name: 1.0 - widths_after.get(name, width) / width
            for name, width in widths_before.items() if width}
