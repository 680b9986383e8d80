"""Which exact shortcuts (``fp.scoring.layers.shortcuts``) a scoring computation takes, decided by
timing both ways on this machine.

Two shortcuts compute the same function and gradients as torch's own layers, rounded
differently, and are faster on some machines and shapes and slower on others:

- **matmul**: a convolution's weight gradient as one matrix product, grad_out times the unfolded
  input (``layers.conv.Geometry``), instead of the backend's weight-gradient kernel. On one 2-core AMD
  EPYC it took 4 ms against 70 ms for 512 3×3 filters on a 1×1 map; on another it lost for
  256 filters on a 2×2 map (2.4 ms against 1.3 ms). No rule on shapes holds on both.
- **fold**: an eval-mode BatchNorm that alone consumes a convolution's output folded into the
  convolution's weight (``layers.fold``): no pass over the activations, but passes over the
  weight.

``decide`` settles both for every convolution of a model before a computation: "off" takes
neither (torch's own layers: a run's default, so that its numbers never depend on a timing),
"on" takes every one that applies (to a convolution called once per forward, the matrix
product only where it is 2-d and ungrouped and its unfolded input fits ``MAX_UNFOLDED_BYTES``),
and "auto" times each shortcut against torch's own layer on this process's device, once per
process for each shape (``TIMED``), and takes it where it is faster by ``fp.timing.MARGIN``.
A convolution is timed alone, its forward and backward as the scoring pass runs them, on random
inputs shaped as the first scoring batch makes them: one forward of one sample finds the
shapes, once per process for a model's modules, widths and images (``DECIDED``). Under
torch.distributed rank 0 times and every rank takes its decisions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn

from fp.nn import eval_mode
from fp.scoring.graph import structure
from fp.scoring.gradients import as_on_rank_zero, is_distributed, is_rank_zero
from fp.scoring.layers.conv import Geometry
from fp.scoring.layers.fold import folded_weight_and_bias, foldable_pairs, is_plain_conv
from fp.scoring.layers.shortcuts import NONE, ShortcutInfo, Shortcuts, checked_mode
from fp.timing import MARGIN, synced_clock

#: the unfolded input of a matrix-product weight gradient may take at most this many bytes: the
#: shortcut is neither timed nor taken above it (memory, not speed, is what this bounds)
MAX_UNFOLDED_BYTES = 2 ** 30
#: a shortcut whose first (untimed) run takes this many times torch's own is not timed further
HOPELESS = 3.0


class Timed(NamedTuple):
    """One shape's timing: torch's own layer and the shortcut (None: not timed, hopeless or too
    large), in seconds, and whether the shortcut is taken."""

    plain_s: float
    shortcut_s: float | None
    taken: bool


#: the timings of this process, by ``(shortcut, shape key)`` (tests swap it for an empty one)
TIMED: dict[tuple, Timed] = {}
#: the decisions of this process, by ``_decision_key`` (tests swap it for an empty one)
DECIDED: dict[tuple, Shortcuts] = {}


@dataclass
class _Site:
    """One convolution as the first scoring batch reaches it."""

    name: str
    conv: nn.Module
    input_shape: tuple[int, ...] = ()
    channels_last: bool = False
    input_grad: bool = True  # False for the model's own input (the images need no gradient)
    calls: int = 0
    batchnorm: nn.Module | None = None


def decide(model: nn.Module, x: Tensor, mode: str) -> tuple[Shortcuts, ShortcutInfo]:
    """The shortcuts of a computation on ``model`` whose first scoring batch holds the images
    ``x`` (rank 0's, under torch.distributed), and how they were decided."""
    mode = checked_mode(mode)
    if mode == "off":
        return NONE, ShortcutInfo(scoring_shortcuts=mode, scoring_matmul=[], scoring_fold=[])
    if is_distributed():  # every rank takes part in rank 0's decision each time
        return _decided(model, x, mode)
    key = _decision_key(model, x, mode)
    if key in DECIDED:  # the same model, widths and images as before: nothing to look at again
        return DECIDED[key], _info(mode, DECIDED[key], 0.0)
    chosen, info = _decided(model, x, mode)
    DECIDED[key] = chosen
    return chosen, info


def _decision_key(model: nn.Module, x: Tensor, mode: str) -> tuple:
    """What a decision depends on: the model's modules with their widths, which parameters
    train (a frozen γ does not fold), and the images' device, dtype, shape and layout."""
    return (mode, structure(model), tuple(p.requires_grad for p in model.parameters()),
            x.device.type, x.dtype, tuple(x.shape),
            x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last))


def _decided(model: nn.Module, x: Tensor, mode: str) -> tuple[Shortcuts, ShortcutInfo]:
    with eval_mode(model):
        pairs = foldable_pairs(model)
    modules = dict(model.named_modules())
    convs = {name: m for name, m in modules.items()
             if is_plain_conv(m) and "forward" not in vars(m)}
    if not convs:
        return NONE, _info(mode, NONE, 0.0)
    if mode == "on":
        sites = _sites(model, x, convs, pairs, x.shape[0])
        chosen = Shortcuts(frozenset(s.name for s in sites if matmul_applies(s)),
                           frozenset(s.name for s in sites if s.batchnorm is not None))
        return chosen, _info(mode, chosen, 0.0)
    spent, chosen = 0.0, NONE
    if is_rank_zero():
        sites = _sites(model, x, convs, pairs, x.shape[0])
        start = synced_clock(x.device)
        matmul = frozenset(s.name for s in sites if _taken("matmul", s))
        fold = frozenset(s.name for s in sites if s.batchnorm is not None and _taken("fold", s))
        spent = synced_clock(x.device) - start
        chosen = Shortcuts(matmul, fold)
    chosen = as_on_rank_zero(chosen)
    return chosen, _info(mode, chosen, spent)


def _info(mode: str, chosen: Shortcuts, spent: float) -> ShortcutInfo:
    return ShortcutInfo(scoring_shortcuts=mode, scoring_matmul=sorted(chosen.matmul),
                        scoring_fold=sorted(chosen.fold), scoring_shortcuts_s=round(spent, 6))


def _sites(model: nn.Module, x: Tensor, convs: dict[str, nn.Module], pairs: dict[str, str],
           batch_size: int) -> list[_Site]:
    """Every convolution called exactly once by one forward of ``x``'s first sample, with the
    shape its input has for ``batch_size`` samples."""
    sites = {conv: _Site(name, conv) for name, conv in convs.items()}

    def record(module: nn.Module, args: tuple) -> None:
        site, inp = sites[module], args[0]
        site.calls += 1
        site.input_shape = (batch_size, *inp.shape[1:])
        site.channels_last = inp.dim() == 4 and inp.is_contiguous(
            memory_format=torch.channels_last) and not inp.is_contiguous()
        site.input_grad = inp is not images

    images = x[:1]
    handles = [conv.register_forward_pre_hook(record) for conv in convs.values()]
    try:
        with eval_mode(model), torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    found = []
    for site in sites.values():
        if site.calls != 1:
            continue
        if site.name in pairs:
            site.batchnorm = model.get_submodule(pairs[site.name])
        found.append(site)
    return found


def _shape_key(site: _Site, x_like: Tensor) -> tuple:
    conv = site.conv
    return (x_like.device.type, x_like.dtype, site.input_shape, site.channels_last,
            tuple(conv.weight.shape), tuple(conv.stride), tuple(conv.padding),
            tuple(conv.dilation), conv.groups, conv.bias is not None, site.input_grad)


def _taken(shortcut: str, site: _Site) -> bool:
    """Whether ``site`` takes ``shortcut``: from this process's timing of its shape, timed now
    if it has none."""
    weight = site.conv.weight
    if shortcut == "matmul" and not matmul_applies(site):
        return False
    key = (shortcut, *_shape_key(site, weight))
    if shortcut == "fold":
        bn = site.batchnorm
        key += (bn.weight is not None, bn.bias is not None)
    if key not in TIMED:
        TIMED[key] = _time(shortcut, site)
    return TIMED[key].taken


def matmul_applies(site: _Site) -> bool:
    """A 2-d, ungrouped convolution whose unfolded input fits ``MAX_UNFOLDED_BYTES``."""
    conv = site.conv
    if len(site.input_shape) != 4 or conv.groups != 1 or conv.weight.dim() != 4:
        return False
    out = _output_shape(site)
    unfolded = (out[0] * math.prod(conv.weight.shape[1:]) * math.prod(out[2:])
                * conv.weight.element_size())
    return unfolded <= MAX_UNFOLDED_BYTES


def _output_shape(site: _Site) -> tuple[int, ...]:
    """The shape of the convolution's output on its input (``Geometry.output_shape``)."""
    conv = site.conv
    geometry = Geometry(tuple(conv.stride), tuple(conv.padding), tuple(conv.dilation),
                        conv.groups)
    return geometry.output_shape(torch.empty(site.input_shape, device="meta"), conv.weight)


class Runs(NamedTuple):
    """What ``_time`` runs for one shape: torch's own computation, the shortcut, and optionally
    the shortcut on ``1/probe_scale`` of the batch (a cheap first look: a shortcut whose cost
    grows with the batch and which is far slower is not run whole)."""

    plain: Callable[[], object]
    shortcut: Callable[[], object]
    probe: Callable[[], object] | None = None
    probe_scale: float = 1.0


#: the share of the batch a probe runs on (its time is scaled up by the inverse)
PROBE_SHARE = 1 / 8


def _time(shortcut: str, site: _Site) -> Timed:
    """Time torch's own computation and the shortcut on random inputs of ``site``'s shapes:
    each once untimed (a hopeless shortcut stops there, or at its probe), then twice more,
    alternating, the faster of each kept."""
    runs = (_matmul_runs if shortcut == "matmul" else _fold_runs)(site)
    device = site.conv.weight.device
    first_plain = _seconds(runs.plain, device)
    if (runs.probe is not None
            and _seconds(runs.probe, device) * runs.probe_scale > HOPELESS * first_plain):
        return Timed(first_plain, None, False)
    if _seconds(runs.shortcut, device) > HOPELESS * first_plain:
        return Timed(first_plain, None, False)
    best = [math.inf, math.inf]
    for order in ((0, 1), (1, 0)):
        for index in order:
            best[index] = min(best[index], _seconds(runs[index], device))
    return Timed(best[0], best[1], best[1] < (1 - MARGIN) * best[0])


def _seconds(run: Callable[[], object], device: torch.device) -> float:
    start = synced_clock(device)
    run()
    return synced_clock(device) - start


def _random(shape: tuple[int, ...], like: Tensor, channels_last: bool) -> Tensor:
    x = torch.randn(shape, device=like.device, dtype=like.dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _matmul_runs(site: _Site) -> Runs:
    """A convolution's backward as the scoring pass runs it (the input's gradient where the
    input needs one, the weight's and the bias's): in one call of the backend's kernel, and with
    the weight's gradient as one matrix product instead (whose cost grows with the batch: probed
    on a share of it first)."""
    conv = site.conv
    geometry = Geometry(tuple(conv.stride), tuple(conv.padding), tuple(conv.dilation),
                        conv.groups)
    weight = conv.weight.detach()
    x = _random(site.input_shape, weight, site.channels_last)
    grad_out = _random(_output_shape(site), weight, site.channels_last)
    mask, product = (site.input_grad, True, conv.bias is not None), geometry.matmul()
    few = max(1, math.ceil(x.shape[0] * PROBE_SHARE))
    return Runs(lambda: geometry.backward(grad_out, x, weight, mask),
                lambda: product.backward(grad_out, x, weight, mask),
                lambda: product.backward(grad_out[:few], x[:few], weight, mask),
                x.shape[0] / few)


def _fold_runs(site: _Site) -> Runs:
    """A forward and backward of the convolution followed by its eval-mode BatchNorm, and of the
    convolution with the BatchNorm folded into its weight and bias: to the input (where it needs
    a gradient), the weight, the bias and the BatchNorm's affine parameters."""
    from types import SimpleNamespace

    conv, bn = site.conv, site.batchnorm
    x = _random(site.input_shape, conv.weight, site.channels_last)
    x.requires_grad_(site.input_grad)
    weight = conv.weight.detach().requires_grad_()
    bias = None if conv.bias is None else conv.bias.detach().requires_grad_()
    gamma = None if bn.weight is None else bn.weight.detach().requires_grad_()
    beta = None if bn.bias is None else bn.bias.detach().requires_grad_()
    stand_in = SimpleNamespace(running_mean=bn.running_mean, running_var=bn.running_var,
                               eps=bn.eps, weight=gamma, bias=beta)
    leaves = [t for t in (x, weight, bias, gamma, beta) if t is not None and t.requires_grad]
    cotangent = _random(_output_shape(site), conv.weight, site.channels_last)

    def unfolded() -> None:
        with torch.enable_grad():
            out = torch.nn.functional.batch_norm(conv._conv_forward(x, weight, bias),
                                                 bn.running_mean, bn.running_var, gamma, beta,
                                                 False, 0.0, bn.eps)
            torch.autograd.grad(out, leaves, cotangent, allow_unused=True)

    def folded() -> None:
        with torch.enable_grad():
            w, b = folded_weight_and_bias(_Detached(weight, bias), stand_in)
            torch.autograd.grad(conv._conv_forward(x, w, b), leaves, cotangent,
                                allow_unused=True)

    return Runs(unfolded, folded)


class _Detached(NamedTuple):
    """A convolution's parameters as ``folded_weight_and_bias`` reads them, standing in for the
    module so that timing never builds a graph through the model's own parameters."""

    weight: Tensor
    bias: Tensor | None
