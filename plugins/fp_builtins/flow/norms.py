"""How the weight norm evolves, measured against gradient flow's first-order prediction.

Under gradient flow dθ/dt = −g, the squared norm of filter p changes as d‖θ_p‖²/dt = −2θ_pᵀg_p
(Lubana & Dick: loss preservation is a statement about how the norm evolves). A *window*
keeps ‖θ_p‖² of every filter at its start and, after every optimizer step, adds

    η_eff · θ ⊙ (g + λθ),   η_eff = lr / (1 − momentum)

to a weight-shaped sum (fused multi-tensor kernels, no extra pass, no device sync), using the
gradients the step already computed (``param.grad``). g + λθ is the gradient of the objective
SGD follows (the loss plus weight decay), and lr / (1 − momentum) is heavy-ball SGD's step in the
gradient-flow limit. Summed per filter, the prediction for the window is
Δ‖θ_p‖² ≈ −2 · Σ_steps η_eff θ_pᵀ(g_p + λθ_p). θ is read after the step, which differs from θ
before it by a second-order term (η‖g‖²), the order the prediction neglects anyway. The sum
costs one extra copy of the prunable weights in memory while a window is open.
"""
from __future__ import annotations

import torch
from torch import Tensor

from fp_builtins.flow.correlation import pearson


def filter_norms_sq(weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """‖θ_p‖² of every output channel p of each weight (float32, detached)."""
    return {name: per_filter(w.detach().float() ** 2) for name, w in weights.items()}


def per_filter(values: Tensor) -> Tensor:
    """Sum over every dim but the output-channel dim (no copy for channels-last tensors)."""
    return values.sum(dim=tuple(range(1, values.dim()))) if values.dim() > 1 else values


def new_window(weights: dict[str, Tensor]) -> dict:
    """A window starting now: the filters' ‖θ_p‖², no accumulated flow yet, zero steps. Plain
    tensors, numbers and dicts, so it can live in checkpointed ``run.state``; the weight-shaped
    accumulators appear at the first step, so a checkpoint taken at a window's start holds
    only the per-filter norms."""
    return {"start": filter_norms_sq(weights), "flow": {}, "steps": 0}


def accumulate(window: dict, weights: dict[str, Tensor], optimizer: torch.optim.Optimizer) -> None:
    """Add one optimizer step's η_eff · θ⊙(g + λθ) for every weight with a gradient, per weight
    entry (reduced to filters only by ``check``): a few fused multi-tensor kernels per step
    instead of a handful per layer."""
    groups = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    by_group: dict[int, list[str]] = {}
    for name, weight in weights.items():
        if weight.grad is not None and id(weight) in groups:
            by_group.setdefault(id(groups[id(weight)]), []).append(name)
    flow = window["flow"]
    with torch.no_grad():
        for names in by_group.values():
            group = groups[id(weights[names[0]])]
            for name in names:
                if name not in flow or flow[name].shape != weights[name].shape:
                    flow[name] = torch.zeros_like(weights[name])
            params = [weights[n] for n in names]
            objective_grads = torch._foreach_add([p.grad for p in params], params,
                                                 alpha=group.get("weight_decay", 0.0))
            step = group["lr"] / (1.0 - group.get("momentum", 0.0))
            torch._foreach_addcmul_([flow[n] for n in names], params, objective_grads, value=step)
    window["steps"] += 1


def window_summary(window: dict, weights: dict[str, Tensor]) -> dict | None:
    """Measured against predicted Δ‖θ_p‖² over the window, per filter (every layer whose width
    did not change, concatenated in module order); None for a window without steps."""
    if window["steps"] == 0:
        return None
    now = filter_norms_sq(weights)
    start = window["start"]
    kept = [n for n, s in now.items() if n in start and start[n].shape == s.shape]
    measured = torch.cat([now[n] - start[n].to(now[n].device) for n in kept]).cpu()
    predicted = torch.cat([-2.0 * _flow_per_filter(window, n, now[n]) for n in kept]).cpu()
    return {"steps": window["steps"], "pearson": pearson(measured, predicted),
            "total_measured": float(measured.sum()), "total_predicted": float(predicted.sum()),
            "filters": {n: int(now[n].numel()) for n in kept},
            "measured": measured.tolist(), "predicted": predicted.tolist()}


def _flow_per_filter(window: dict, name: str, like: Tensor) -> Tensor:
    """The window's accumulated η_eff·θ_pᵀ(g_p + λθ_p) per filter (zero for a weight that never
    had a gradient)."""
    flow = window["flow"].get(name)
    return torch.zeros_like(like) if flow is None else per_filter(flow.float()).to(like.device)
