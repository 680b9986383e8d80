"""What this process measured once and decides by: timings on one scoring batch that pick how
later scoring passes run, remembered for a model and its images (``model_key``) in a ``Measured``
cache. Two choices work so: the memory layout of the images (here) and the Hessian-vector product
method (``fp.scoring.hvp.choice``). A third, the exact shortcuts of each convolution
(``fp.scoring.shortcut_choice``), is timed per convolution shape instead, since it depends on
widths that pruning changes.

The layout: as given ("contiguous", NCHW) or channels-last (NHWC), whichever gradient pass is
faster here. It changes no value, only how fast a convolution runs and how it rounds. Which is
faster depends on the model, the images and the machine (on 2 CPU cores, a CIFAR ResNet-20 scores
about a tenth faster channels-last; other models gain nothing or lose), so "auto" times one
scoring batch's gradient pass in each layout, twice each and alternating (a first run's one-off
setup does not decide), once per process for a ``model_key``; channels-last must win by
``MARGIN`` to be chosen. Under torch.distributed every rank takes rank 0's choice.
"""
from __future__ import annotations

from typing import Generic, Sequence, TypedDict, TypeVar

import torch
from torch import Tensor, nn

from fp.errors import ConfigError
from fp.nn import eval_mode
from fp.scoring.gradients import Batch, as_on_rank_zero, batch_grads, trainable
from fp.scoring.graph import structure
from fp.scoring.layers.gradient_pass import first_order_layers
from fp.scoring.shortcut_choice import decide
from fp.timing import MARGIN, synced_clock

LAYOUTS = ("auto", "contiguous", "channels_last")

ModelKey = tuple
T = TypeVar("T")


def model_key(model: nn.Module, x: Tensor) -> ModelKey:
    """What a measurement is remembered by: ``model``'s modules (qualified names and types, the
    model's own class first; not widths: a model pruned event after event keeps what was
    measured for it dense), and the device type, dtype, shape and memory format (channels-last
    or not) of its images ``x``."""
    return (structure(model, widths=False), x.device.type, x.dtype, tuple(x.shape),
            x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last))


class Measured(Generic[T]):
    """Values measured once per process, each for a ``model_key``: what a later model with the
    same key reuses instead of measuring again."""

    def __init__(self) -> None:
        self.by_key: dict[ModelKey, T] = {}

    def get(self, model: nn.Module, x: Tensor) -> T | None:
        """The value measured for ``model`` scoring images ``x``, None if none was yet."""
        return self.by_key.get(model_key(model, x))

    def put(self, model: nn.Module, x: Tensor, value: T) -> T:
        """Remember ``value`` for ``model`` scoring images ``x``; returns it."""
        self.by_key[model_key(model, x)] = value
        return value

    def __len__(self) -> int:
        return len(self.by_key)


#: the layouts "auto" chose in this process (tests swap it for an empty one)
LAYOUT_CHOICES: Measured[str] = Measured()


class LayoutInfo(TypedDict, total=False):
    """The layout the scoring passes run in, as ``ScoreContext.info`` names it."""

    scoring_layout: str
    scoring_layout_s: dict[str, float]  # seconds per layout, where "auto" timed them now


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


def chosen_layout(model: nn.Module, x: Tensor) -> str | None:
    """The layout "auto" chose in this process for ``model`` scoring images ``x`` (as given),
    None if it has not chosen one."""
    return LAYOUT_CHOICES.get(model, x)


def choose_layout(model: nn.Module, batches: Sequence[Batch], temperature: float,
                  requested: str, shortcuts: str = "off") -> LayoutInfo:
    """The layout to score ``batches`` in: ``requested`` unless "auto"; for "auto", what this
    process chose (now, on the first batch, if not yet) for the model and these images, with
    the seconds per layout when timed now, each layout's passes taking the exact shortcuts that
    the mode ``shortcuts`` decides for it (``fp.scoring.layers.shortcuts``)."""
    x = batches[0][0]
    if requested != "auto" or not applies(model, x):
        return LayoutInfo(scoring_layout=requested if requested != "auto" else "contiguous")
    chosen = LAYOUT_CHOICES.get(model, x)
    if chosen is not None:
        return LayoutInfo(scoring_layout=chosen)
    timings = time_layouts(model, batches[0], temperature, shortcuts)
    faster = timings["channels_last"] < (1 - MARGIN) * timings["contiguous"]
    chosen = LAYOUT_CHOICES.put(model, x, as_on_rank_zero("channels_last" if faster
                                                           else "contiguous"))
    return LayoutInfo(scoring_layout=chosen,
                      scoring_layout_s={name: round(s, 6) for name, s in timings.items()})


def time_layouts(model: nn.Module, batch: Batch, temperature: float,
                 shortcuts: str = "off") -> dict[str, float]:
    """The fastest of two gradient passes over ``batch`` (as ``fp.scoring.gradients`` runs them,
    with no collective, taking the shortcuts the mode ``shortcuts`` decides for each layout) in
    each layout, run alternately."""
    device = batch[0].device
    _, params = trainable(model)
    passes = {}
    for layout in LAYOUTS[1:]:
        (x, y), = in_layout([batch], layout)
        passes[layout] = x, y, decide(model, x, shortcuts)[0]
    best = {layout: float("inf") for layout in passes}
    with eval_mode(model), torch.enable_grad():
        for _ in range(2):
            for layout, (x, y, chosen) in passes.items():
                with first_order_layers(model, chosen):
                    start = synced_clock(device)
                    batch_grads(model, x, y, temperature, params)
                    best[layout] = min(best[layout], synced_clock(device) - start)
    return best
