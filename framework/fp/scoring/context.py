"""What a measure sees: the model, the scoring batches and the loss statistics they share."""
from __future__ import annotations

import copy
from typing import Callable, Iterable

import torch
from torch import Tensor, nn

from fp.errors import ConfigError, DataError
from fp.measure import Measure
from fp.nn import filter_sums, prunable_weights, tempered_loss
from fp.scoring import autotune, gradients, graph, hvp
from fp.scoring.gradients import ScoringLoss
from fp.scoring.hvp import filterwise
from fp.scoring import shortcut_choice
from fp.scoring.layers import shortcuts as exact_shortcuts

#: T when neither the context nor the measure names one: the paper protocol's training temperature
DEFAULT_TEMPERATURE = Measure.temperature
#: what ``hvp_method`` may be
HVP_CHOICES = ("auto", *hvp.METHODS)


class ParamStats(dict):
    """Parameter name → statistic; a frozen parameter has none, and asking for it says so."""

    def __missing__(self, name: str) -> Tensor:
        raise ConfigError(f"parameter {name!r} has no gradient statistics because it is frozen "
                          f"(requires_grad=False); gradient-based measures cannot score it.")


class ScoreContext:
    """The model, the scoring batches (on ``device``), the weights to score and lazily computed,
    cached loss statistics: ``grad``, ``grad_sq`` and ``hess_grad`` at a temperature T, each a
    mean over scoring samples (batches may differ in size; see ``fp.scoring.gradients``).

    The cache is keyed by T and shared by every view from ``for_temperature``, so the measures of
    one prune event compute each statistic once. It assumes the model does not change meanwhile.
    ``hvp_method`` picks how Hg is computed: "double_backward", "forward_over_reverse" or "auto"
    (both timed on one batch, once per process for the model's modules and its images, see
    ``fp.scoring.autotune``; the cheaper is used and named in ``info["hvp_method"]``).
    ``hvp_memory_gb`` caps the first-order graphs double backward keeps (None: half the
    device's free memory); see ``fp.scoring.hvp``. ``grad_sq=False`` leaves E[g²] out of the
    gradient pass and ``grad=False`` leaves g out (either, asked for later, takes a pass of its
    own). ``layout`` is the images' memory layout for the passes: "contiguous" (as given),
    "channels_last" or "auto" (decided before the first statistic by timing both, see
    ``fp.scoring.autotune``; named in ``info["scoring_layout"]``). ``shortcuts`` says which exact
    shortcuts the passes take (matrix-product weight gradients, folded BatchNorms): "auto" (each
    timed against torch's own layer, once per process and shape), "off" or "on" (see
    ``fp.scoring.shortcut_choice``; None: ``layers.shortcuts.DEFAULT_MODE``, "auto"); the convolutions that
    take each are named in ``info``. ``info`` says how the statistics were computed (the keys of
    ``hvp.HvpInfo``, ``autotune.LayoutInfo`` and ``shortcuts.ShortcutInfo``); a caller may add
    entries of its own. ``seed``, for measures that draw random numbers, is a prune
    event's own (None: the measure's). ``tf32=True`` lets the passes use TF32 on a GPU that has
    it; by default every statistic is computed in full fp32 (``fp.precision``), as on a CPU.
    """

    def __init__(self, model: nn.Module, batches: Iterable | None, *,
                 temperature: float | None = None, device: torch.device | str | None = None,
                 weights: dict[str, nn.Parameter] | None = None,
                 input_shape: tuple[int, ...] | None = None, hvp_method: str = "auto",
                 hvp_memory_gb: float | None = None, grad: bool = True,
                 grad_sq: bool = True, layout: str = "auto", seed: int | None = None,
                 tf32: bool = False, shortcuts: str | None = None):
        if hvp_method not in HVP_CHOICES:
            raise ConfigError(f"hvp_method {hvp_method!r} is not one of {', '.join(HVP_CHOICES)}.")
        if hvp_memory_gb is not None and not hvp_memory_gb >= 0:
            raise ConfigError(f"hvp_memory_gb must be at least 0 (or None), not {hvp_memory_gb!r}.")
        self.model = model
        self.device = torch.device(device) if device is not None else _device_of(model)
        self.batches = [_to_device(b, self.device, _float_dtype(model)) for b in batches or ()]
        self.temperature = _checked_temperature(DEFAULT_TEMPERATURE if temperature is None
                                                else temperature)
        self.weights = prunable_weights(model) if weights is None else _checked(model, weights)
        first_input = self.batches[0][0] if self.batches else None
        self.input_shape = (tuple(input_shape) if input_shape is not None
                            else tuple(first_input.shape[1:]) if first_input is not None else None)
        self.hvp_method, self.plain, self.squares = hvp_method, grad, grad_sq
        self.layout = autotune.checked_layout(layout)
        self.shortcuts = exact_shortcuts.checked_mode(
            exact_shortcuts.DEFAULT_MODE if shortcuts is None else shortcuts)
        self.hvp_memory = None if hvp_memory_gb is None else hvp_memory_gb * 2 ** 30
        self.seed = seed
        self.tf32 = bool(tf32)
        self.info: dict = {}          # shared with views: hvp_method, scoring_layout, ...
        self._cache: dict = {}        # shared with views: statistics keyed by (kind, T)

    def for_temperature(self, temperature: float) -> "ScoreContext":
        """A view of this context whose default T is ``temperature``; it shares the cache."""
        view = copy.copy(self)
        view.temperature = _checked_temperature(temperature)
        return view

    def loss(self, outputs: Tensor, targets: Tensor, temperature: float | None = None) -> Tensor:
        """The scoring loss: cross-entropy of outputs/T, the mean over the batch."""
        return tempered_loss(outputs, targets, self._t(temperature))

    def grad(self, temperature: float | None = None) -> dict[str, Tensor]:
        """g = Σ_b n_b ∇L_b / Σ_b n_b: the mean over scoring samples (a batch counts by its
        size n_b, and under torch.distributed every rank's samples count), for every trainable
        parameter."""
        return self._first_order(temperature, plain=True)[0]

    def grad_sq(self, temperature: float | None = None) -> dict[str, Tensor]:
        """E[g²] = Σ_b n_b (∇L_b)² / Σ_b n_b: the squared per-batch gradient, weighted by
        batch size as ``grad`` is."""
        return self._first_order(temperature, squares=True)[1]

    def hess_grad(self, temperature: float | None = None) -> dict[str, Tensor]:
        """Hg = Σ_b n_b ∇(ḡᵀ∇L_b) / Σ_b n_b, ḡ = g detached: ∇(ḡᵀg), weighted as ``grad``."""
        t = self._t(temperature)
        key = ("hess_grad", t)
        if key not in self._cache:
            self._cache[key] = self._second_order(hvp.mean_hess_grad, t)
        return self._cache[key]

    def filter_hess_grad(self, temperature: float | None = None) -> dict[str, Tensor]:
        """Σ_{i∈p} θ_i (Hg)_i for each filter p of each scored weight: ``hess_grad`` reduced to
        what a filter score needs, computed without the full Hg where that is cheaper."""
        t = self._t(temperature)
        key = ("filter_hess_grad", t)
        if key not in self._cache:
            if ("hess_grad", t) in self._cache:
                hess_grad = self._cache[("hess_grad", t)]
                dots = {n: filter_sums(w.detach() * hess_grad[n])
                        for n, w in self.weights.items() if n in hess_grad}
            else:
                dots = self._second_order(
                    lambda loss, **options: filterwise.mean_filter_hess_grad(
                        loss, self.weights, **options), t)
            self._cache[key] = ParamStats(dots)
        return self._cache[key]

    def _second_order(self, compute: Callable[..., hvp.HvpResult], t: float) -> ParamStats:
        """``compute``'s statistic at T (``compute(loss, method=, memory=, first_order=)``);
        the g and E[g²] its pass finds are cached too, and a g already cached is handed in (then
        that pass cannot keep graphs). How it was computed goes to ``info``."""
        batches = self._require_batches()
        result = compute(ScoringLoss.of(self.model, batches, t, self._cache["shortcuts"]),
                         method=self.hvp_method, memory=self.hvp_memory,
                         first_order=self._complete(("grad", t)))
        self.info.update(result.info)
        if self._complete(("grad", t)) is None:
            self._cache[("grad", t)] = ParamStats(result.grad), ParamStats(result.grad_sq)
        return ParamStats(result.found)

    def following_bn(self, weight_name: str) -> nn.Module | None:
        """The BatchNorm normalising this weight's output channels, or None."""
        name = self.following_bn_name(weight_name)
        return None if name is None else self.model.get_submodule(name)

    def following_bn_name(self, weight_name: str) -> str | None:
        """The qualified name of ``following_bn(weight_name)``, or None."""
        if "following_bn" not in self._cache:
            example = self.batches[0][0][:1] if self.batches else None
            self._cache["following_bn"] = graph.following_batchnorms(
                self.model, list(self.weights), example)
        if weight_name not in self._cache["following_bn"]:
            raise ConfigError(f"{weight_name!r} is not one of the weights being scored.")
        return self._cache["following_bn"][weight_name]

    def _first_order(self, temperature: float | None, plain: bool = False,
                     squares: bool = False) -> tuple[ParamStats | None, ParamStats | None]:
        """(g, E[g²]) at T, from the cache or one pass for what is missing of those asked for
        (``plain``: g, ``squares``: E[g²]); a pass also finds what the context was built to
        keep. What was never asked for may be None."""
        key = ("grad", self._t(temperature))
        grad, grad_sq = self._cache.get(key, (None, None))
        if (plain and grad is None) or (squares and grad_sq is None):
            batches = self._require_batches()
            found = gradients.mean_grad_and_sq(
                self.model, batches, key[1],
                squares=grad_sq is None and (squares or self.squares),
                plain=grad is None and (plain or self.plain), shortcuts=self._cache["shortcuts"])
            grad = grad if found[0] is None else ParamStats(found[0])
            grad_sq = grad_sq if found[1] is None else ParamStats(found[1])
            self._cache[key] = grad, grad_sq
        return grad, grad_sq

    def _complete(self, key: tuple) -> tuple[ParamStats, ParamStats] | None:
        """The cached (g, E[g²]) under ``key`` if it holds both."""
        cached = self._cache.get(key)
        return cached if cached is not None and None not in cached else None

    def _t(self, temperature: float | None) -> float:
        return self.temperature if temperature is None else _checked_temperature(temperature)

    def _require_batches(self) -> list[tuple[Tensor, Tensor]]:
        """The batches, in the layout decided before the first statistic (the list is shared
        with every view, so all of them see it); the shortcuts for that layout are decided then
        too (``_cache["shortcuts"]``)."""
        if not self.batches:
            raise DataError("gradient statistics need scoring batches, and none were given.")
        if "layout" not in self._cache:
            found = autotune.choose_layout(self.model, self.batches, self.temperature,
                                           self.layout, self.shortcuts)
            self.info.update(found)
            self.batches[:] = autotune.in_layout(self.batches, found["scoring_layout"])
            self._cache["layout"] = found["scoring_layout"]
            chosen, how = shortcut_choice.decide(self.model, self.batches[0][0], self.shortcuts)
            self.info.update(how)
            self._cache["shortcuts"] = chosen
        return self.batches


def _checked(model: nn.Module, weights: dict[str, nn.Parameter]) -> dict[str, nn.Parameter]:
    params = dict(model.named_parameters())
    for name, param in weights.items():
        if params.get(name) is not param:
            raise ConfigError(f"weight {name!r} is not a parameter of the model by that name.")
    return dict(weights)


def _checked_temperature(temperature: float) -> float:
    if not float(temperature) > 0:
        raise ConfigError(f"the scoring temperature must be positive, not {temperature!r}.")
    return float(temperature)


def _device_of(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _float_dtype(model: nn.Module) -> torch.dtype | None:
    first = next((p for p in model.parameters() if p.is_floating_point()), None)
    return first.dtype if first is not None else None


def _to_device(batch, device: torch.device, dtype: torch.dtype | None) -> tuple[Tensor, Tensor]:
    try:
        x, y = batch[0], batch[1]
    except (TypeError, IndexError, KeyError):
        raise DataError(f"a scoring batch must be (inputs, targets), not {type(batch).__name__}."
                        ) from None
    x = x.to(device, dtype=dtype if x.is_floating_point() and dtype is not None else None)
    return x, y.to(device)
