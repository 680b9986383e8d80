"""Loss, accuracy and ‖g‖² on the fixed evaluation set V (``data.eval_samples``, ``run.eval_set``):
the quantities claim (i) of Lubana & Dick (ICLR 2021), "magnitude-pruned models converge faster",
is about, measured on the same images all run long and for every measure of a seed.

At every epoch end and just before and just after every prune event (the model before scoring,
then after the surgery and the optimizer rebuild) rank 0 appends to metrics.jsonl
``{"event": "eval_set", "at": "epoch" | "before_prune" | "after_prune", "epoch", "step",
"index" (prune events only), "loss", "acc", "grad_norm_sq", "samples", "temperature"}``; the
epoch-end values also go to TensorBoard as ``eval_set/loss``, ``eval_set/acc`` and
``eval_set/grad_norm_sq``. Every rank holds all of V, so rank 0 measures alone (no collective).

The flow plugin calls these from its own hooks whatever ``flow.enabled`` says: V's records are
on exactly when ``data.eval_samples`` > 0 (blocking the whole flow plugin drops them too).
"""
from __future__ import annotations

import torch
from torch import Tensor

from fp.nn import eval_mode, tempered_loss, unwrapped

#: TensorBoard tags of the epoch-end measurements: record key -> tag
TAGS = {"loss": "eval_set/loss", "acc": "eval_set/acc", "grad_norm_sq": "eval_set/grad_norm_sq"}


def log(run, at: str, event=None) -> None:
    """Measure ``run.model`` on V and append the record of ``at`` (an epoch end or one side of
    prune ``event``); nothing when the run holds no V or on ranks other than 0."""
    batches = getattr(run, "eval_set", None)
    if not batches or not run.is_main:
        return
    temperature = run.settings.train.temperature
    record = {"event": "eval_set", "at": at, "epoch": run.epoch, "step": run.step}
    if event is not None:
        record["index"] = event.index
    model = unwrapped(run.model)
    record.update(measure(model, batches, temperature, pruned_entries(model, run.masks)))
    run.log(record)
    if at == "epoch":
        run.log_scalars({tag: record[key] for key, tag in TAGS.items()}, run.step)


def pruned_entries(model: torch.nn.Module, weight_masks: dict[str, Tensor]) -> dict[str, Tensor]:
    """Parameter name -> bool mask of its pruned entries (True = pruned): masked weights (weight
    granularity) and masked filter rows (``prune.residual = "masked"``, ``model.fp_filter_masks``).
    They are not parameters of the pruned model, so ‖g‖² leaves them out."""
    params = dict(model.named_parameters())
    pruned = {name: ~mask.bool() for name, mask in (weight_masks or {}).items()}
    for name, rows in (getattr(model, "fp_filter_masks", None) or {}).items():
        shape = (-1,) + (1,) * (params[name].dim() - 1)
        rows = (~rows.bool()).view(shape).expand_as(params[name])
        pruned[name] = pruned[name] | rows.to(pruned[name].device) if name in pruned else rows
    return pruned


def measure(model: torch.nn.Module, batches: list[tuple[Tensor, Tensor]],
            temperature: float, pruned: dict[str, Tensor] | None = None) -> dict[str, float]:
    """On ``batches``, with BatchNorm in eval mode and in full precision: the mean loss L (the
    cross-entropy of logits/T over every sample), the accuracy, and ‖g‖² for g = ∇L over every
    trainable parameter (Σ_b n_b ∇L_b / Σ_b n_b), in one forward and backward pass per batch;
    entries ``pruned`` names (parameter name -> True where pruned) are left out of ‖g‖²."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    grad = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    loss_sum = torch.zeros((), dtype=torch.float64, device=params[0].device)
    correct = torch.zeros((), dtype=torch.long, device=params[0].device)
    samples = 0
    with eval_mode(model), torch.enable_grad():
        for x, y in batches:
            logits = model(x)
            loss = tempered_loss(logits, y, temperature)
            parts = torch.autograd.grad(loss, params, allow_unused=True)
            for total, part in zip(grad, parts):
                if part is not None:  # a parameter the loss does not reach has g = 0
                    total.add_(part.double(), alpha=len(y))
            loss_sum += loss.detach().double() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            samples += len(y)
    for (name, _), total in zip(named, grad):
        if pruned and name in pruned:
            total.masked_fill_(pruned[name].to(total.device), 0)
    norm_sq = sum(float((total / samples).pow(2).sum()) for total in grad)
    return {"loss": float(loss_sum / samples), "acc": float(correct) / samples,
            "grad_norm_sq": norm_sq, "samples": samples, "temperature": temperature}
