"""Scoring as a user sees it: the public ``fp.score(model, name, batches)``, a fresh call each
repetition with the measure named as a user names it (resolved through the shared manager),
against the loop a user writes for the same gradients: the model in eval mode, then per batch
``F.cross_entropy(model(x), y).backward()``, then ``zero_grad``. Rows ``outside/<measure>/<model>``
on a torchvision model and on the CIFAR ResNet the other scoring rows use.

The loop divides the logits by T only for a measure whose class sets its own T (part of its
definition: GraSP's T = 200, the seed's); the others score at fp.Measure's protocol default
(T = 5) where a user's loop has none, one division of the (batch × classes) logits per batch.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from fp.measure import Measure
from fp.nn import eval_mode
from fp.scoring import autotune, resolve_measure, score  # score is fp.score
from fp.timing import measure_ratio
from fp.tools.bench.rows import make_row

FIRST_ORDER = ("snip", "taylor", "biased_snip", "fisher", "bn_taylor")
HESSIAN = ("grasp", "grad_norm")
#: fp.score time / the user's loop: one gradient pass for first-order measures; the gradient
#: and a Hessian-vector product through it for the Hg ones
TARGETS = {**{name: "<= 1.05" for name in FIRST_ORDER}, **{name: "<= 2.5" for name in HESSIAN}}
BASELINE = "a user's loop: eval(), F.cross_entropy(model(x), y).backward() per batch, zero_grad()"

Batches = list[tuple[torch.Tensor, torch.Tensor]]


def torchvision_model(name: str, classes: int) -> nn.Module:
    """``torchvision.models.<name>(num_classes=classes)``, untrained, as a user builds it."""
    import torchvision

    return getattr(torchvision.models, name)(num_classes=classes)


def defining_temperature(measure: Measure) -> float | None:
    """The measure's T if its class sets one, None if it inherits fp.Measure's default."""
    for cls in type(measure).__mro__:
        if cls is Measure:
            return None
        if "temperature" in vars(cls):
            return measure.temperature
    return None


def user_loop(model: nn.Module, batches: Batches, temperature: float | None) -> Callable[[], None]:
    """The hand-written gradient pass (at ``temperature``, or on the raw logits)."""
    def run() -> None:
        model.eval()
        for x, y in batches:
            logits = model(x)
            F.cross_entropy(logits if temperature is None else logits / temperature, y).backward()
        model.zero_grad(set_to_none=True)
    return run


def outside_row(name: str, model: nn.Module, label: str, batches: Batches, *, repeats: int,
                device: torch.device) -> dict[str, Any]:
    """The row ``outside/<name>/<label>``."""
    measure = resolve_measure(name)
    loop_t = defining_temperature(measure)
    timing = measure_ratio(lambda: score(model, name, batches),
                           user_loop(model, batches, loop_t), repeats=repeats, device=device)
    x, y = batches[0]
    notes = (f"{sum(len(t) for _, t in batches)} samples in {len(batches)} batches of "
             f"{len(y)}, input {tuple(x.shape[1:])}; ")
    notes += (f"both at T={loop_t:g}" if loop_t is not None else
              f"fp.score at T={measure.temperature:g} (the default), the loop on raw logits")
    if measure.needs_data:  # the images' layout fp.score chose here (the loop's are contiguous)
        notes += f"; fp.score {autotune.chosen_layout(model, x) or 'contiguous'}"
    return make_row(f"outside/{name}/{label}", timing, TARGETS[name], baseline=BASELINE,
                    notes=notes)


def outside_rows(models: dict[str, nn.Module], batches: Batches, *, repeats: int,
                 device: torch.device,
                 on_row: Callable[[dict], None] = lambda row: None) -> list[dict[str, Any]]:
    """Every measure of TARGETS on every model (label → model), in that order; each model gets
    its modes back after (the user's loop leaves it in eval mode)."""
    rows = []
    for label, model in models.items():
        with eval_mode(model):
            for name in TARGETS:
                rows.append(outside_row(name, model, label, batches, repeats=repeats,
                                        device=device))
                on_row(rows[-1])
    return rows
