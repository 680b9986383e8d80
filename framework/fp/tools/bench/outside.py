"""Scoring as a user sees it: the public ``fp.score(model, name, batches)``, a fresh call each
repetition with the measure named as a user names it (resolved through the shared manager),
against the loop a user writes for the same gradients: the model in eval mode, then per batch
``F.cross_entropy(model(x), y).backward()``, then ``zero_grad``. Rows ``outside/<measure>/<model>``
on a torchvision model and on the CIFAR ResNet the other scoring rows use.

The loop divides the logits by T only for a measure whose class sets its own T (part of its
definition: GraSP's T = 200, the seed's); the others score at fp.Measure's protocol default
(T = 5) where a user's loop has none, one division of the (batch × classes) logits per batch.

Pruning as a user sees it: ``fp.prune(model, "taylor", batches, 0.5)`` against the pipeline a
user writes with Torch-Pruning instead (``torch_pruning_taylor``), rows ``outside/prune/<model>``
on torchvision models. Each side of every pair prunes its own fresh copy of the same initial
weights (the copy is not timed), on the same batches.
"""
from __future__ import annotations

import copy
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from fp.measure import Measure
from fp.nn import eval_mode
from fp.pruning import count_params, prune  # prune is fp.prune
from fp.scoring import autotune, resolve_measure, score  # score is fp.score
from fp.scoring import shortcut_choice
from fp.tools.bench.scoring_cost import shortcut_note
from fp.timing import Task, measure_ratio
from fp.tools.bench.rows import make_row

FIRST_ORDER = ("snip", "taylor", "biased_snip", "fisher", "bn_taylor")
HESSIAN = ("grasp", "grad_norm")
#: fp.score time / the user's loop: one gradient pass for first-order measures; the gradient
#: and a Hessian-vector product through it for the Hg ones
TARGETS = {**{name: "<= 1.05" for name in FIRST_ORDER}, **{name: "<= 2.5" for name in HESSIAN}}
BASELINE = "a user's loop: eval(), F.cross_entropy(model(x), y).backward() per batch, zero_grad()"
#: fp.prune time / Torch-Pruning's pipeline for the same job: both trace the model, take one
#: gradient pass and cut the channels, so fp's extras (its checks) must cost nothing overall
PRUNE_TARGET = "<= 1.0"
#: the fraction pruned: fp.prune's amount of filters, Torch-Pruning's pruning_ratio
PRUNE_AMOUNT = 0.5
PRUNE_BASELINE = ("Torch-Pruning's MetaPruner with GroupTaylorImportance: global pruning, "
                  f"pruning_ratio {PRUNE_AMOUNT:g}, the classifier ignored, eval(), "
                  "F.cross_entropy(model(x), y).backward() per batch, then pruner.step()")

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
        layout = autotune.chosen_layout(model, x) or "contiguous"
        notes += f"; fp.score {layout}"
        # the exact shortcuts it took there, as this process timed them (nothing is timed again)
        _, how = shortcut_choice.decide(model, autotune.in_layout([(x, y)], layout)[0][0], "auto")
        notes += shortcut_note(how)
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


def classifier(model: nn.Module) -> nn.Module:
    """The last linear layer: the classifier a user keeps whole."""
    return [module for module in model.modules() if isinstance(module, nn.Linear)][-1]


def torch_pruning_taylor(model: nn.Module, batches: Batches, amount: float) -> nn.Module:
    """What a user writes with Torch-Pruning for a global Taylor prune of ``amount``."""
    import torch_pruning as tp

    pruner = tp.pruner.MetaPruner(model, batches[0][0][:1],
                                  importance=tp.importance.GroupTaylorImportance(),
                                  global_pruning=True, pruning_ratio=amount,
                                  ignored_layers=[classifier(model)])
    model.eval()
    for x, y in batches:
        F.cross_entropy(model(x), y).backward()
    pruner.step()
    return model


def random_batches(count: int, size: int, side: int, classes: int,
                   device: torch.device) -> Batches:
    """``count`` batches of ``size`` random images (side × side) and labels, seeded."""
    gen = torch.Generator().manual_seed(0)
    return [(torch.randn(size, 3, side, side, generator=gen).to(device),
             torch.randint(0, classes, (size,), generator=gen).to(device)) for _ in range(count)]


def outside_prune_row(name: str, model: nn.Module, batches: Batches, *, repeats: int,
                      device: torch.device) -> dict[str, Any]:
    """The row ``outside/prune/<name>``: ``model`` is the dense model both sides copy."""
    kept: dict[str, int] = {}

    def side(label: str, prune_copy: Callable[[nn.Module], nn.Module]) -> Task:
        def run(fresh: nn.Module) -> None:
            kept[label] = count_params(prune_copy(fresh))
        return Task(run=run, prepare=lambda: copy.deepcopy(model))

    timing = measure_ratio(
        side("fp", lambda m: prune(m, "taylor", batches, PRUNE_AMOUNT)),
        side("tp", lambda m: torch_pruning_taylor(m, batches, PRUNE_AMOUNT)),
        repeats=repeats, device=device)
    x, y = batches[0]
    notes = (f"torchvision {name}, {len(batches)} batches of {len(y)}, input {tuple(x.shape[1:])}"
             f"; params kept of {count_params(model):,}: fp.prune {kept['fp']:,}, "
             f"Torch-Pruning {kept['tp']:,}")
    return make_row(f"outside/prune/{name}", timing, PRUNE_TARGET, baseline=PRUNE_BASELINE,
                    notes=notes)


def outside_prune_rows(models: tuple[tuple[str, int], ...], *, batches: int, batch_size: int,
                       classes: int, repeats: int, device: torch.device,
                       on_row: Callable[[dict], None] = lambda row: None) -> list[dict[str, Any]]:
    """One ``outside/prune/<name>`` row per (torchvision builder, image side in px)."""
    rows = []
    for name, side in models:
        torch.manual_seed(0)  # the same initial weights every bench
        model = torchvision_model(name, classes).to(device)
        rows.append(outside_prune_row(name, model,
                                      random_batches(batches, batch_size, side, classes, device),
                                      repeats=repeats, device=device))
        on_row(rows[-1])
    return rows
