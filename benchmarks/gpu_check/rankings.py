"""How far TF32 moves a prune event's ranking: the filter scores of one measure on the same
batches with ``fp.ScoreContext(..., tf32=False)`` (the default: full fp32) and ``tf32=True``,
compared by their Spearman rank correlation over all filters (the paper ranks globally, across
layers) and by the share of filters whose keep/prune decision differs at the event's fraction
(of every scored filter, the output layer's, which are never pruned, included).

The decisions are ``fp.prune``'s own (its per-layer cap, residual ties, protected output layer),
read back from the pruned model: before surgery every filter of a copy is filled with its own
index (surgery selects on the given scores alone, never on the weights), and the filters a
pruned layer still has carry the indices that were kept."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from scipy import stats
from torch import nn


def tag_filters(model: nn.Module, names: Sequence[str]) -> None:
    """Fill filter ``c`` of every named weight of ``model`` with the number ``c``, in place."""
    with torch.no_grad():
        for name in names:
            weight = model.get_parameter(name)
            index = torch.arange(weight.shape[0], dtype=weight.dtype, device=weight.device)
            weight.copy_(index.view(-1, *[1] * (weight.dim() - 1)).expand_as(weight))


def kept_filters(model: nn.Module, names: Sequence[str]) -> dict[str, set[int]]:
    """The original indices of the filters each named weight of a tagged, pruned ``model`` still
    has (read from any one of a filter's entries: input channels may have gone too)."""
    found = {}
    for name in names:
        weight = model.get_parameter(name).detach()
        found[name] = {int(round(v)) for v in weight.reshape(weight.shape[0], -1)[:, 0].tolist()}
    return found


def spearman(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """The Spearman rank correlation of two score vectors over the entries finite in both (None
    where it is undefined: fewer than two such entries, or a constant side)."""
    finite = torch.isfinite(a) & torch.isfinite(b)
    a, b = a[finite].double().cpu().numpy(), b[finite].double().cpu().numpy()
    if len(a) < 2 or a.min() == a.max() or b.min() == b.max():
        return None
    rho = stats.spearmanr(a, b).statistic
    return None if math.isnan(rho) else round(float(rho), 6)


def compare(fp32: dict[str, torch.Tensor], tf32: dict[str, torch.Tensor],
            kept_fp32: dict[str, set[int]], kept_tf32: dict[str, set[int]]) -> dict:
    """How far the TF32 scores moved: rank correlation, decisions that differ (a filter kept by
    one and removed by the other), and the largest relative change of a score."""
    names = sorted(fp32)
    a = torch.cat([fp32[n].detach().flatten().double().cpu() for n in names])
    b = torch.cat([tf32[n].detach().flatten().double().cpu() for n in names])
    filters = sum(fp32[n].numel() for n in names)
    differ = sum(len(kept_fp32[n] ^ kept_tf32[n]) for n in names)
    finite = torch.isfinite(a) & torch.isfinite(b)
    a_, b_ = a[finite], b[finite]
    scale = a_.abs().max().item() if len(a_) else 0.0
    return {"filters": filters, "spearman": spearman(a, b),
            "decisions_differ": round(differ / filters, 6) if filters else None,
            "filters_decided_differently": differ,
            "identical_scores": bool(torch.equal(a, b)),
            "max_abs_change_over_max_score": round((a_ - b_).abs().max().item() / scale, 9)
            if scale > 0 else None}
