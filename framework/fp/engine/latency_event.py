"""A prune event of a run whose target is latency (``prune.target_type = "latency"``).

Rank 0 times pruned copies on the run's device (``fp.pruning.prune_to_latency``) at
``prune.latency_batch``, by default the dense model's saturating batch (found once, at the first
event, and kept in the checkpoint), in the run's numerics (bf16 autocast with
``experiment.amp``, channels_last with ``experiment.channels_last``); other ranks apply rank 0's
choice untimed. Each probe becomes a ``latency_probe`` record in metrics.jsonl and TensorBoard
scalars; the event's dense and final latencies go into its prune record (``event.info``) and the
run's summary.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from fp import pruning
from fp.errors import PruningError
from fp import timing as latency
from fp.pruning.surgery import PruneResult
from fp.run import PruneEvent, Run

#: run.state key of the latency batch and the last event's latencies (plain data: checkpointed)
STATE = "latency"


def timing_options(run: Run) -> dict[str, Any]:
    experiment = run.settings.experiment
    return {"dtype": "bfloat16" if experiment.amp else "float32",
            "channels_last": experiment.channels_last}


def latency_batch(run: Run, example: torch.Tensor) -> int:
    """``prune.latency_batch``, or the dense model's saturating batch on the run's device."""
    state = run.state.setdefault(STATE, {})
    if "latency_batch" not in state:
        batch = run.settings.prune.latency_batch
        if batch is None:
            batch, curve = latency.saturating_batch(run.model, example, device=run.device,
                                                    **timing_options(run))
            state["saturation"] = [list(point) for point in curve]
        state["latency_batch"] = int(batch)
    return state["latency_batch"]


def prune_latency(run: Run, event: PruneEvent, example_inputs: torch.Tensor,
                  carry: dict[str, torch.Tensor] | None) -> PruneResult:
    """Prune ``run.model`` in place to the event's latency target; returns the surgery's result."""
    prune = run.settings.prune
    options = dict(example_inputs=example_inputs, dense=run.dense, max_fraction=prune.max_fraction,
                   protected=tuple(prune.protected), carry=carry, round_to=prune.round_to,
                   probes=prune.latency_probes)
    example = example_inputs[:1]
    done, failure = None, None
    if run.is_main:
        batch = latency_batch(run, example)
        measure = pruning.measured_latency(example, batch, device=run.device, **timing_options(run))
        try:
            done = pruning.prune_to_latency(run.model, event.scores, event.target,
                                            latency_fn=measure, **options)
        except PruningError as exc:
            failure = exc
    if run.world_size > 1:  # the others take rank 0's count, or its error
        shared = [None if done is None else done.candidate, None if failure is None else str(failure)]
        dist.broadcast_object_list(shared, src=0)
        if not run.is_main:
            if shared[1] is not None:
                raise PruningError(shared[1])
            return pruning.prune_to_latency(run.model, event.scores, event.target,
                                            candidate=shared[0], **options).result
    if failure is not None:
        raise failure
    record_probes(run, event, done)
    return done.result


def record_probes(run: Run, event: PruneEvent, done) -> None:
    """metrics.jsonl and TensorBoard get every probe; the prune record and the summary the
    event's dense and final latencies."""
    state = run.state[STATE]
    batch = state["latency_batch"]
    for probe in done.records():
        run.log({"event": "latency_probe", "index": event.index, "step": run.step,
                 "epoch": run.epoch, "target": event.target, "latency_batch": batch, **probe})
        run.log_scalars({f"latency/event_{event.index}/ratio": probe["ratio"],
                         f"latency/event_{event.index}/latency_ms": 1e3 * probe["latency_s"]},
                        step=probe["probe"])
    summary = {**done.summary(), "latency_batch": batch, "latency_target": event.target,
               "latency_candidate": done.candidate}
    state["probes_total"] = state.get("probes_total", 0) + summary["latency_probes"]
    state.update({k: v for k, v in summary.items() if k != "latency_candidate"})
    event.info["latency"] = summary
    run.log_scalars({"latency/ratio": summary["latency_ratio"],
                     "latency/final_ms": 1e3 * summary["final_latency_s"],
                     "latency/dense_ms": 1e3 * summary["dense_latency_s"]}, step=run.step)


def summary_fields(run: Run) -> dict[str, Any]:
    """What summary.json records of a latency run: the batch, the last event's measured dense and
    final latencies (one interleaved timing, so their ratio is consistent), probes in all."""
    state = run.state.get(STATE)
    if not state or "final_latency_s" not in state:
        return {}
    keys = ("latency_batch", "dense_latency_s", "final_latency_s", "latency_ratio",
            "latency_noise", "latency_target", "probes_total")
    return {("latency_probes" if k == "probes_total" else k): state[k] for k in keys if k in state}
