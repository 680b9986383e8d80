"""Gradient statistics of the scoring loss, computed once per prune event and shared by measures.

L_b is the cross-entropy of logits/T on scoring batch b (mean over the batch). As in the paper's
seed code the model is in eval mode (BatchNorm on running statistics) and every trainable parameter
takes part: g = mean_b ∇L_b, E[g²] = mean_b (∇L_b)², and Hg = mean_b ∇(ḡᵀ∇L_b) with ḡ = g
detached. Means are over batches (each batch weighs the same), then over distributed ranks.
"""
from __future__ import annotations

import contextlib
import time
import warnings
from typing import Callable, Iterator, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

Batch = tuple[Tensor, Tensor]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run the block with ``model`` in eval mode, then give every submodule its own mode back."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:  # the attribute, not train(): that would recurse
            module.training = training


def batch_loss(model: nn.Module, x: Tensor, y: Tensor, temperature: float) -> Tensor:
    """Cross-entropy of the tempered logits, the mean over the batch."""
    return F.cross_entropy(model(x) / temperature, y)


def trainable(model: nn.Module) -> tuple[list[str], list[nn.Parameter]]:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [n for n, _ in named], [p for _, p in named]


def _all_reduce_mean(tensors: Sequence[Tensor]) -> Sequence[Tensor]:
    """Average ``tensors`` in place over the ranks of the default process group, so every rank
    ranks filters on identical scores; a no-op outside torch.distributed or with one rank."""
    if not tensors or not (dist.is_available() and dist.is_initialized()):
        return tensors
    world = dist.get_world_size()
    if world < 2:
        return tensors
    flat = torch.cat([t.reshape(-1) for t in tensors])  # one collective instead of one per tensor
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()
    return tensors


def mean_grad_and_sq(model: nn.Module, batches: list[Batch],
                     temperature: float) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """g and E[g²] over all trainable parameters, from one forward and backward per batch."""
    names, params = trainable(model)
    if not names:
        return {}, {}
    total = [torch.zeros_like(p) for p in params]
    total_sq = [torch.zeros_like(p) for p in params]
    with eval_mode(model), torch.enable_grad():
        for x, y in batches:
            grads = torch.autograd.grad(batch_loss(model, x, y, temperature), params,
                                        allow_unused=True)
            for acc, acc_sq, grad in zip(total, total_sq, grads):
                if grad is not None:
                    acc.add_(grad)
                    acc_sq.addcmul_(grad, grad)
    means = _all_reduce_mean([t.div_(len(batches)) for t in total + total_sq])
    return dict(zip(names, means[:len(names)])), dict(zip(names, means[len(names):]))


# --- Hessian-gradient product -------------------------------------------------------------------

HvpFn = Callable[[nn.Module, Tensor, Tensor, float, list[str], list[nn.Parameter], list[Tensor]],
                 list[Tensor]]


def hvp_double_backward(model, x, y, temperature, names, params, vec) -> list[Tensor]:
    """H_b v as ∇(vᵀ∇L_b): reverse mode twice, through the graph of the first gradient."""
    grads = torch.autograd.grad(batch_loss(model, x, y, temperature), params,
                                create_graph=True, allow_unused=True)
    terms = [(g * v).sum() for g, v in zip(grads, vec) if g is not None and g.requires_grad]
    if not terms:  # the loss is linear in every parameter: H = 0
        return [torch.zeros_like(p) for p in params]
    hv = torch.autograd.grad(torch.stack(terms).sum(), params, allow_unused=True)
    return [torch.zeros_like(p) if h is None else h for h, p in zip(hv, params)]


def hvp_forward_over_reverse(model, x, y, temperature, names, params, vec) -> list[Tensor]:
    """H_b v as the directional derivative (jvp) of the gradient function along v. Functional
    because eval-mode BatchNorm reads its running statistics without updating them."""
    def loss_of(weights: dict[str, Tensor]) -> Tensor:
        logits = torch.func.functional_call(model, weights, (x,))
        return F.cross_entropy(logits / temperature, y)

    primals = {n: p.detach() for n, p in zip(names, params)}
    tangents = dict(zip(names, vec))
    with warnings.catch_warnings():  # torch loads its forward-AD formulas via torch.jit.script
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script", category=FutureWarning)
        _, hv = torch.func.jvp(torch.func.grad(loss_of), (primals,), (tangents,))
    return [hv[n] for n in names]


HVP_METHODS: dict[str, HvpFn] = {
    "double_backward": hvp_double_backward,
    "forward_over_reverse": hvp_forward_over_reverse,
}


#: (method, device type) pairs that have run in this process; a first call pays one-off setup
#: (torch.func builds its transforms, cuDNN picks kernels) that must not decide the timing
_WARM: set[tuple[str, str]] = set()


def _timed(method: str, device: torch.device, args: tuple) -> tuple[list[Tensor], float]:
    fn = HVP_METHODS[method]
    if (method, device.type) not in _WARM:
        fn(*args)
        _WARM.add((method, device.type))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = fn(*args)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - start


def _fastest(args: tuple, device: torch.device, info: dict) -> tuple[str, list[Tensor]]:
    """Time both methods once on the first batch and keep the faster one; forward-mode AD lacks
    formulas for some ops, so a failure there leaves double backward."""
    hv, seconds = _timed("double_backward", device, args)
    info["hvp_seconds"] = {"double_backward": seconds}
    try:
        _, info["hvp_seconds"]["forward_over_reverse"] = _timed(
            "forward_over_reverse", device, args)
    except Exception as exc:  # noqa: BLE001 - any unsupported op means: use the other method
        info["hvp_fallback_reason"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return min(info["hvp_seconds"], key=info["hvp_seconds"].get), hv


def mean_hess_grad(model: nn.Module, batches: list[Batch], temperature: float,
                   grad: dict[str, Tensor], method: str, info: dict) -> dict[str, Tensor]:
    """Hg = mean_b ∇(ḡᵀ∇L_b) over all trainable parameters. ``method`` is a key of
    ``HVP_METHODS`` or "auto", which times both on the first batch unless ``info`` already holds
    a choice; the method used is recorded in ``info["hvp_method"]``."""
    names, params = trainable(model)
    if not names:
        return {}
    vec = [grad[n].detach() for n in names]
    total = [torch.zeros_like(p) for p in params]
    chosen = info.get("hvp_method") if method == "auto" else method
    with eval_mode(model), torch.enable_grad():
        for x, y in batches:
            args = (model, x, y, temperature, names, params, vec)
            if chosen is None:
                chosen, hv = _fastest(args, params[0].device, info)
            else:
                hv = HVP_METHODS[chosen](*args)
            info["hvp_method"] = chosen
            for acc, h in zip(total, hv):
                acc.add_(h)
    means = _all_reduce_mean([t.div_(len(batches)) for t in total])
    return dict(zip(names, means))
