"""The latency target, checked from outside: ``fp.prune(..., target_type="latency")`` removes
filters until the model's measured latency is at most (1 - target) of the dense model's; the row
times the pruned model again, interleaved with the dense one, and compares the ratio with the
target."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from fp import timing
from fp.errors import PruningError
from fp.pruning import prune
from fp.tools.bench.rows import make_row, skipped_row

#: fraction of the dense model's latency the row's prune event removes
TARGET = 0.5


def latency_target_row(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], *,
                       batch_size: int, device: torch.device) -> dict[str, Any]:
    """``latency_target``: a pruned copy of ``model`` (scored by magnitude: which filters go does
    not change how the target is met) timed at ``batch_size`` against the dense model."""
    dense = copy.deepcopy(model).eval()
    baseline = "the dense model's forward pass at the same batch"
    try:
        pruned = prune(copy.deepcopy(model), "magnitude", batches, TARGET, target_type="latency",
                       latency_batch=batch_size)
    except PruningError as exc:  # the row fails, the bench goes on
        return {**skipped_row("latency_target", f"<= {1 - TARGET:g}", baseline=baseline,
                              notes=f"batch {batch_size}: {exc}"), "skipped": False, "ok": False}
    searched = pruned.fp_latency
    example = batches[0][0][:1]
    dense_timing, pruned_timing = timing.time_forward_pair(dense, pruned, example, batch_size,
                                                           device=device)
    paired = timing.PairedTimes(measured=pruned_timing.times_s, baseline=dense_timing.times_s)
    accepted = next(p for p in searched["probes"] if p["accepted"])
    notes = (f"batch {batch_size}; the search took {searched['latency_probes']} probes and "
             f"accepted {accepted['ratio']:.3f} of the dense latency (noise "
             f"{accepted['noise']:.1%}); re-timed here with spread {pruned_timing.spread:.1%}, "
             f"{sum(p.numel() for p in pruned.parameters()):,} of "
             f"{sum(p.numel() for p in dense.parameters()):,} parameters kept")
    return make_row("latency_target", paired, f"<= {1 - TARGET:g}", baseline=baseline,
                    notes=notes)
