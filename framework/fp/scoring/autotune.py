"""The memory layout scoring passes run their images in: as given ("contiguous", NCHW) or
channels-last (NHWC), whichever gradient pass is faster here.

The layout changes no value, only how fast a convolution runs and how it rounds. Which is faster
depends on the model, the images and the machine (on 2 CPU cores, a CIFAR ResNet-20 scores about
a tenth faster channels-last; other models gain nothing or lose), so "auto" times one scoring
batch's gradient pass in each layout, twice each and alternating (a first run's one-off setup
does not decide), once per process for a model's modules (pruning them narrower keeps the
choice), device, dtype and batch shape; channels-last must win by ``MARGIN`` to be chosen.
Under torch.distributed every rank takes rank 0's choice.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from fp.errors import ConfigError
from fp.nn import eval_mode
from fp.scoring.layers.gradient_pass import first_order_layers
from fp.scoring.hvp.choice import clock
from fp.scoring.gradients import as_on_rank_zero, batch_grads, trainable

LAYOUTS = ("auto", "contiguous", "channels_last")
#: channels-last is chosen only if its pass takes less than (1 − MARGIN) of the other's
MARGIN = 0.03
#: choices made in this process, by (model structure, device type, dtype, batch shape)
CHOSEN: dict[tuple, str] = {}

Batch = tuple[Tensor, Tensor]


def checked_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ConfigError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}.")
    return layout


def applies(model: nn.Module, x: Tensor) -> bool:
    """Whether channels-last means anything here: 4-d floating images into a 2-d convolution."""
    return (x.dim() == 4 and x.is_floating_point()
            and any(isinstance(m, nn.Conv2d) for m in model.modules()))


def in_layout(batches: Sequence[Batch], layout: str) -> list[Batch]:
    """The batches with their images in ``layout`` ("contiguous" leaves them as they are)."""
    if layout != "channels_last":
        return list(batches)
    return [(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x, y)
            for x, y in batches]


def layout_key(model: nn.Module, x: Tensor) -> tuple:
    """What a choice in CHOSEN is remembered by: ``model``'s modules (names and types, not
    widths: a model pruned event after event keeps the choice made for it dense), and device,
    dtype and shape of the images ``x``."""
    modules = tuple((name, type(module)) for name, module in model.named_modules())
    return modules, x.device.type, x.dtype, tuple(x.shape)


def choose_layout(model: nn.Module, batches: Sequence[Batch], temperature: float,
                  requested: str, info: dict) -> str:
    """The layout to score ``batches`` in: ``requested`` unless "auto"; for "auto", what this
    process measured (now, on the first batch, if not yet) for this model structure. ``info``
    receives scoring_layout and, for "auto", scoring_layout_s (seconds per layout)."""
    x = batches[0][0]
    if requested != "auto" or not applies(model, x):
        chosen = requested if requested != "auto" else "contiguous"
    else:
        key = layout_key(model, x)
        if key not in CHOSEN:
            timings = time_layouts(model, batches[0], temperature)
            info["scoring_layout_s"] = {name: round(s, 6) for name, s in timings.items()}
            faster = timings["channels_last"] < (1 - MARGIN) * timings["contiguous"]
            CHOSEN[key] = as_on_rank_zero("channels_last" if faster else "contiguous")
        chosen = CHOSEN[key]
    info["scoring_layout"] = chosen
    return chosen


def time_layouts(model: nn.Module, batch: Batch, temperature: float) -> dict[str, float]:
    """The fastest of two gradient passes over ``batch`` (as ``statistics`` runs them, with no
    collective) in each layout, run alternately."""
    device = batch[0].device
    _, params = trainable(model)
    best = {layout: float("inf") for layout in LAYOUTS[1:]}
    with eval_mode(model), torch.enable_grad(), first_order_layers(model):
        for _ in range(2):
            for layout in best:
                (x, y), = in_layout([batch], layout)
                start = clock(device)
                batch_grads(model, x, y, temperature, params)
                best[layout] = min(best[layout], clock(device) - start)
    return best
