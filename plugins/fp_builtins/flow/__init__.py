"""Gradient-flow diagnostics, on by default (``flow.enabled = False`` switches them off): what the
paper's first-order arguments (Lubana & Dick, ICLR 2021) say, measured on the live run.

At the start and at every epoch end (rank 0; norms only, no extra passes):
  * ‖θ‖² of each prunable conv/linear weight and in total;
  * the norm-flow check (``norms``): measured Δ‖θ_p‖² of every filter since the last epoch end
    or prune event against the prediction −2·Σ_steps η_eff θ_pᵀ(g_p + λθ_p), as Pearson's r
    and totals.
At every prune event (on every rank, since the gradients are all-reduced; logged by rank 0):
  * the same norm-flow check over the window that ends at the event, with the per-filter scatter
    data (``measured``, ``predicted``, ``filters``: widths in order) in metrics.jsonl;
  * loss and ‖g‖² just before and just after the event, and the first-order predicted loss change
    (``prune_check``), on the scoring batches at the training temperature — one extra gradient
    pass on the pruned model, plus one when the measure scores at another temperature;
  * filter granularity: each layer's pruned fraction, and Spearman and Kendall rank correlations
    between the run's filter scores and those of ``flow.compare`` (magnitude, snip, grasp by
    default: the paper's three views of importance), concatenated over layers. They share the
    event's cached gradients; grasp adds a Hessian-gradient pass at its own temperature.

Records go to metrics.jsonl as ``{"event": "flow", "at": "start" | "epoch" | "prune", ...}`` and
to TensorBoard under flow/ and layer/<layer>/ through the ``log_scalars`` hook (``run.log_scalars``).

The fixed evaluation set V (``data.eval_samples`` > 0) is measured here too, but independently of
``flow.enabled``: loss, accuracy and ‖g‖² on V at every epoch end and just before and after every
prune event, as ``{"event": "eval_set", ...}`` records (``eval_set``).
"""
from __future__ import annotations

from typing import Any, Sequence

import gin
import torch

import fp
from fp.errors import ConfigError
from fp_builtins.flow import eval_set, norms, prune_check
from fp.nn import prunable_weights
from fp.run import layer_tag

#: checkpointed: the norm window (filter norms at its start, accumulated flow, steps)
STATE_KEY = "flow"
#: per process only (leading underscore): settings and the compared measures
SETTINGS_KEY = "_flow"
#: norm-flow summary fields that also appear at epoch ends (the scatter lists only at prunes)
FLOW_SUMMARY = ("steps", "pearson", "total_measured", "total_predicted")


@gin.configurable("flow")
def flow(enabled: bool = True,
         compare: Sequence[str] = ("magnitude", "snip", "grasp")) -> dict[str, Any]:
    """Diagnostics settings: on or off, and the registered measures whose filter rankings are
    correlated with the run's at each prune event (an empty list skips that comparison)."""
    if isinstance(compare, str):
        raise ConfigError(f"flow.compare = {compare!r} must be a list of measure names, "
                          f"e.g. ['{compare}'].")
    return {"enabled": bool(enabled), "compare": list(compare)}


def _settings(run) -> dict[str, Any] | None:
    return run.state.get(SETTINGS_KEY)


@fp.hookimpl
def run_start(run) -> None:
    settings = flow()
    if not settings["enabled"]:
        run.state[SETTINGS_KEY] = None
        return
    registry = run.manager.registries["measures"]
    compared = {name: registry.build(name) for name in settings["compare"]}
    run.state[SETTINGS_KEY] = {"temperature": run.settings.train.temperature,
                               "measures": compared}
    if not run.is_main:
        return
    if run.state.get(STATE_KEY) is None:  # a resumed run's comes back on the model's device
        run.state[STATE_KEY] = norms.new_window(prunable_weights(run.model))
    if not run.resumed:
        log_norms(run, "start", None)


@fp.hookimpl
def after_step(run, step: int, loss: torch.Tensor) -> None:
    if _settings(run) and run.is_main:
        norms.accumulate(run.state[STATE_KEY], prunable_weights(run.model), run.optimizer)


@fp.hookimpl
def before_prune(run, event) -> None:
    eval_set.log(run, "before_prune", event)  # first, and whatever flow.enabled says
    settings = _settings(run)
    if not settings:
        return
    norm_flow = None
    if run.is_main:
        norm_flow = norms.window_summary(run.state[STATE_KEY], prunable_weights(run.model))
    before = prune_check.observe_before(run, event, settings["measures"], settings["temperature"])
    event.info["flow"] = {"norm_flow": norm_flow, "before": before}


@fp.hookimpl
def after_prune(run, event) -> None:
    eval_set.log(run, "after_prune", event)  # the model after surgery, whatever flow.enabled says
    settings, kept = _settings(run), event.info.pop("flow", None)
    if not settings or kept is None:
        return
    record = prune_check.observe_after(run, event, kept["before"], settings["temperature"])
    if run.is_main:
        run.state[STATE_KEY] = norms.new_window(prunable_weights(run.model))  # shapes changed
        log_prune(run, event, {**record, "norm_flow": kept["norm_flow"]})


@fp.hookimpl
def after_epoch(run, epoch: int, metrics: dict[str, float]) -> None:
    eval_set.log(run, "epoch")  # whatever flow.enabled says
    if not _settings(run) or not run.is_main:
        return
    weights = prunable_weights(run.model)
    norm_flow = norms.window_summary(run.state[STATE_KEY], weights)
    log_norms(run, "epoch", norm_flow and {k: norm_flow[k] for k in FLOW_SUMMARY})
    run.state[STATE_KEY] = norms.new_window(weights)


def log_norms(run, at: str, norm_flow: dict | None) -> None:
    """‖θ‖² per layer and in total (and the window's norm-flow summary) at ``run.step``."""
    filters = norms.filter_norms_sq(prunable_weights(run.model))
    per_layer = {name: float(values.sum()) for name, values in filters.items()}
    record = {"event": "flow", "at": at, "epoch": run.epoch, "step": run.step,
              "norm_sq": per_layer, "norm_sq_total": sum(per_layer.values()),
              "norm_flow": norm_flow}
    run.log(record)
    scalars = {"flow/norm_sq_total": record["norm_sq_total"],
               **{layer_tag(name, "norm_sq"): value for name, value in per_layer.items()},
               **_norm_flow_scalars(norm_flow)}
    run.log_scalars(scalars, run.step)


def log_prune(run, event, record: dict) -> None:
    """The prune event's record to metrics.jsonl, its scalars to TensorBoard at ``event.step``."""
    run.log({"event": "flow", "at": "prune", "index": event.index, "epoch": event.epoch,
             "step": event.step, "granularity": event.granularity,
             "measure": getattr(run.measure, "name", ""), **record})
    scalars = {f"flow/{key}": record[key] for key in (
        "loss_before", "loss_after", "loss_change", "loss_change_predicted",
        "grad_norm_sq_before", "grad_norm_sq_after")}
    scalars.update(_norm_flow_scalars(record["norm_flow"]))
    for name, fraction in record.get("pruned_frac", {}).items():
        scalars[layer_tag(name, "pruned_frac")] = fraction
    for measure, values in record.get("rank_correlation", {}).items():
        for statistic, value in values.items():
            if value is not None:
                scalars[f"flow/rank_{statistic}/{measure}"] = value
    run.log_scalars(scalars, event.step)


def _norm_flow_scalars(norm_flow: dict | None) -> dict[str, float]:
    if not norm_flow:
        return {}
    scalars = {"flow/norm_change": norm_flow["total_measured"],
               "flow/norm_change_predicted": norm_flow["total_predicted"]}
    if norm_flow["pearson"] is not None:
        scalars["flow/norm_flow_pearson"] = norm_flow["pearson"]
    return scalars

