"""summary.json: what a finished run reports (docs/run-directory.md), and the model's size that
its epoch and prune records share with it."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from fp import pruning
from fp.engine.prune_event import LATENCY_STATE
from fp.run import Run

if TYPE_CHECKING:  # pragma: no cover
    from fp.engine.build import Setup


def structure_stats(model: torch.nn.Module, example_inputs: torch.Tensor,
                    dense: dict[str, Any]) -> dict[str, Any]:
    """The model's parameters, FLOPs and kept filters, and each as a fraction of the dense
    model's."""
    params = pruning.count_params(model)
    flops = pruning.count_flops(model, example_inputs)
    filters = pruning.prunable_filters(model)
    return {"params": params, "flops": flops, "filters_kept": filters,
            "params_frac": params / dense["params"], "flops_frac": flops / max(dense["flops"], 1),
            "filters_kept_frac": filters / dense["filters"]}


def latency_fields(run: Run) -> dict[str, Any]:
    """What summary.json records of a latency run: the batch, the last event's measured dense and
    final latencies (one interleaved timing, so their ratio is consistent), probes in all."""
    state = run.state.get(LATENCY_STATE)
    if not state or "final_latency_s" not in state:
        return {}
    keys = ("latency_batch", "dense_latency_s", "final_latency_s", "latency_ratio",
            "latency_noise", "latency_target", "probes_total")
    return {("latency_probes" if k == "probes_total" else k): state[k] for k in keys if k in state}


def make_summary(s: "Setup", run: Run, elapsed: float) -> dict[str, Any]:
    """The contents of summary.json for the run ``s`` built, after ``elapsed`` seconds."""
    st = s.settings
    stats = s.stats(run)
    last = s.last_metrics
    return {
        "test_acc": last.get("test_acc"), "best_test_acc": s.best, "test_loss": last.get("test_loss"),
        "train_acc": last.get("train_acc"), "train_loss": last.get("train_loss"),
        "params": stats["params"], "dense_params": run.dense["params"],
        "flops": stats["flops"], "dense_flops": run.dense["flops"],
        "filters_kept": stats["filters_kept"], "dense_filters": run.dense["filters"],
        "sparsity": pruning.sparsity(run.model, run.masks) if run.masks else 0.0,
        "epochs": run.epoch, "steps": run.step, "wall_time_s": round(elapsed, 3),
        "measure": st.prune.measure, "architecture": st.model.architecture,
        "dataset": st.data.dataset, "target": st.prune.target, "target_type": st.prune.target_type,
        "granularity": st.prune.granularity, "schedule": st.prune.schedule, "rounds": st.prune.rounds,
        "prune_events": s.event_index, "seed": st.experiment.seed, "world_size": run.world_size,
        "device": str(run.device), "name": st.experiment.name, **latency_fields(run),
        **({"compile": s.compiler.summary()} if s.compiler is not None else {}),
    }
