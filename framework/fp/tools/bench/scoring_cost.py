"""Scoring cost: ``fp.scoring.score`` with a fresh ScoreContext (as every prune event builds one)
against ONE forward+backward pass over the same batches, in eval mode, at the same temperature:
the least any gradient-based measure must spend."""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from fp.timing import measure_ratio
from fp.tools.bench.rows import make_row
from fp.nn import eval_mode
from fp.scoring import ScoreContext, score

#: scoring time / one forward+backward. First-order measures need exactly one pass; Hg needs
#: the gradient first and then a Hessian-vector product; data-free ones must be nearly free.
TARGETS = {
    "snip": "<= 1.05", "taylor": "<= 1.05", "biased_snip": "<= 1.05", "fisher": "<= 1.05",
    "bn_taylor": "<= 1.05",
    "grasp": "<= 2.5", "grad_norm": "<= 2.5",
    "magnitude": "<= 0.01", "l1": "<= 0.01", "bn_scale": "<= 0.01", "random": "<= 0.01",
    "synflow": "<= 0.05",
}
#: a measure from a third-party plugin has no agreed target; its row is reported, never failed
INFORMATIONAL = "<= inf"
BASELINE = "one forward+backward over the scoring batches"

Batches = list[tuple[torch.Tensor, torch.Tensor]]


def forward_backward(model: nn.Module, batches: Batches, temperature: float) -> None:
    """The bound: the scoring loss's gradient accumulated over every batch, once."""
    with eval_mode(model), torch.enable_grad():
        for x, y in batches:
            F.cross_entropy(model(x) / temperature, y).backward()
    model.zero_grad(set_to_none=True)


def score_row(model: nn.Module, measure, batches: Batches, *, repeats: int,
              device: torch.device) -> dict[str, Any]:
    """The row ``score/<measure>``; its notes name the HVP method "auto" chose, if any, and the
    exact shortcuts "auto" took."""
    info: dict[str, Any] = {}

    def scored() -> None:
        ctx = ScoreContext(model, batches)
        score(model, measure, batches, ctx=ctx)
        info.update(ctx.info)

    timing = measure_ratio(scored, lambda: forward_backward(model, batches, measure.temperature),
                     repeats=repeats, device=device)
    target = TARGETS.get(measure.name, INFORMATIONAL)
    samples = sum(len(y) for _, y in batches)
    notes = f"{samples} samples in {len(batches)} batches, T={measure.temperature:g}"
    return make_row(f"score/{measure.name}", timing, target, baseline=BASELINE,
                    notes=notes + hvp_note(info) + shortcut_note(info))


def shortcut_note(info: dict[str, Any]) -> str:
    """How many convolutions took each exact shortcut (matrix-product weight gradient, folded
    BatchNorm), as timed on this machine."""
    if "scoring_shortcuts" not in info:
        return ""
    return (f"; shortcuts {info['scoring_shortcuts']}: matmul {len(info.get('scoring_matmul', []))}"
            f", fold {len(info.get('scoring_fold', []))}")


def hvp_note(info: dict[str, Any]) -> str:
    """Which HVP method ran, how many first-order graphs it kept, and what the probe measured
    each method to add to the gradient pass per batch."""
    if "hvp_method" not in info:
        return ""
    note = f"; hvp {info['hvp_method']}, graphs kept {info.get('hvp_kept', '-')}"
    costs = ", ".join(f"{name} +{s:.3f} s" for name, s in info.get("hvp_seconds", {}).items())
    return note + (f" (probe, per batch: {costs})" if costs else "")


def score_rows(model: nn.Module, batches: Batches, measures: list, *, repeats: int,
               device: torch.device,
               on_row: Callable[[dict], None] = lambda row: None) -> list[dict[str, Any]]:
    rows = []
    for measure in measures:
        rows.append(score_row(model, measure, batches, repeats=repeats, device=device))
        on_row(rows[-1])
    return rows
