"""Which way of computing Hg is cheaper here, and how much of the first-order graphs to keep.

"auto" times both methods on one batch (``time_methods``) once per process for a model and its
images (``fp.scoring.autotune.model_key``), remembers the ``MethodCosts`` in ``COSTS``, and takes
the cheaper for each computation given the share of graphs its memory budget keeps.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fp.device import free_memory
from fp.scoring.autotune import Measured
from fp.timing import synced_clock
from fp.scoring.gradients import Batch, ScoringLoss, as_on_rank_zero, batch_grads
from fp.scoring.hvp.methods import HVP_FUNCTIONS, SavedBytes, differentiate, graph_grads


@dataclass(frozen=True)
class MethodCosts:
    """Seconds per batch that each method adds to a plain gradient pass, timed on one batch:
    double backward pays the first pass's create_graph (``graph_s`` − ``plain_s``) and the
    backward through it (``double_s``); it recomputes the first pass (``graph_s``) for a batch
    whose graph was not kept. Forward over reverse costs ``jvp_s`` (None: unsupported, for
    ``jvp_error``)."""

    plain_s: float
    graph_s: float
    double_s: float
    jvp_s: float | None
    jvp_error: str = ""
    graph_bytes: int = 0                # what one batch's kept first-order graph holds

    def seconds(self, kept_share: float) -> dict[str, float]:
        """Each available method's added seconds per batch when ``kept_share`` of the batches
        keep their graph."""
        double = self.graph_s + self.double_s - kept_share * self.plain_s
        return {"double_backward": double} | ({} if self.jvp_s is None
                                              else {"forward_over_reverse": self.jvp_s})

    def cheapest(self, kept_share: float) -> str:
        costs = self.seconds(kept_share)
        return min(costs, key=costs.get)


#: share of the device's free memory that kept first-order graphs may use by default
MEMORY_SHARE = 0.5
#: the method costs timed in this process (tests swap it for an empty one)
COSTS: Measured[MethodCosts] = Measured()
#: (method, device type) pairs that have run here: a first call pays one-off setup (torch.func
#: builds its transforms, cuDNN picks kernels) that must not decide a timing
WARM: set[tuple[str, str]] = set()


def kept_share(graph_bytes: int, budget: float, batches: int) -> float:
    """The fraction of ``batches`` whose first-order graphs fit in ``budget`` bytes."""
    keep = batches if graph_bytes <= 0 else min(batches, int(budget // graph_bytes))
    return keep / batches


def time_methods(loss: ScoringLoss, batch: Batch) -> MethodCosts:
    """Time the gradient pass plain and with its graph, the double backward through that graph
    and forward over reverse, on one batch with its own gradient as v (timings do not depend on
    v). Forward-mode AD lacks formulas for some ops: then only double backward is available."""
    x, y = batch
    device = x.device
    start = synced_clock(device)
    vec = list(batch_grads(loss.model, x, y, loss.temperature, loss.params))
    plain = synced_clock(device) - start
    vec = [torch.zeros_like(p) if v is None else v for v, p in zip(vec, loss.params)]
    saved = SavedBytes(loss.params)
    start = synced_clock(device)
    grads = graph_grads(loss, batch, saved=saved)
    graph = synced_clock(device) - start
    differentiate([grads], vec, loss.params)
    double = synced_clock(device) - start - graph
    del grads
    jvp, error = None, ""
    try:
        jvp_fn = HVP_FUNCTIONS["forward_over_reverse"]
        if ("forward_over_reverse", device.type) not in WARM:
            jvp_fn(loss, batch, vec)
            WARM.add(("forward_over_reverse", device.type))
        start = synced_clock(device)
        jvp_fn(loss, batch, vec)
        jvp = synced_clock(device) - start
    except Exception as exc:  # noqa: BLE001 - any unsupported op means: use the other method
        error = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return MethodCosts(plain, graph, double, jvp, error, graph_bytes=saved.bytes)


@dataclass(frozen=True)
class MethodChoice:
    """The method one Hg computation uses and the bytes its kept graphs may hold; for "auto",
    also what decided it."""

    method: str
    budget: float
    timed: str = ""                    # "this call, batch 1" or "earlier in this process"
    seconds: dict[str, float] = field(default_factory=dict)  # each method's added s per batch
    fallback_reason: str = ""          # why forward over reverse is unavailable


def choose_method(loss: ScoringLoss, method: str, memory: float | None,
                  first_order: tuple[dict, dict] | None) -> MethodChoice:
    """The method: ``method`` itself unless "auto"; and the byte budget for kept graphs
    (``memory``; None: MEMORY_SHARE of the free memory). ``first_order`` is (g, E[g²]) if known
    already (then no graph can be kept)."""
    device = loss.batches[0][0].device
    budget = MEMORY_SHARE * free_memory(device) if memory is None else memory
    if method != "auto":
        return MethodChoice(method, budget)
    x = loss.batches[0][0]
    costs = COSTS.get(loss.model, x)
    timed = "earlier in this process" if costs is not None else "this call, batch 1"
    if costs is None:
        costs = COSTS.put(loss.model, x, time_methods(loss, loss.batches[0]))
    kept = 0.0 if first_order is not None else kept_share(costs.graph_bytes, budget,
                                                          len(loss.batches))
    # ranks time their own costs; they must agree, as the two methods' collectives differ
    return MethodChoice(as_on_rank_zero(costs.cheapest(kept)), budget, timed,
                        {m: round(s, 6) for m, s in costs.seconds(kept).items()},
                        costs.jvp_error)
