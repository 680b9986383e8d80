"""Losses, gradients and the first-order predictions of an intervention (docs/interventions.md).

Every loss is the mean over a set's samples of the cross-entropy of logits/T, with BatchNorm in
eval mode (running statistics); g = ∇L over every trainable parameter. On V at the training
temperature:

- zeroing (a) sets the entries R_a to 0: each chosen filter's weight row and bias, its θ as the
  loss-preservation measures count it. The conv's output channel is then 0, but the BatchNorm
  that follows still adds its shift, so the channel carries a constant (below). Its first-order
  prediction is

      predicted_zeroed = Σ_{i∈R_a} g_i (0 − θ_i) = −Σ_{i∈R_a} θ_i g_i.

- removal (b) deletes channel c: the next layers lose their input a_c. Take it in two steps.
  Zeroing only the filter's weight row and bias makes the conv output 0, but the BatchNorm then
  outputs the constant k_c = β_c − γ_c μ_c / sqrt(σ²_c + ε) (its eval output of 0), and the
  activation that reads it h_c = act(k_c) (conv→BN→ReLU: relu(k_c)); removal then takes that
  constant away from the next layers' input. Both steps to first order at the dense model:

      predicted_removed = −Σ_{i∈R_b} θ_i g_i − Σ_c Σ_{n,p} (∂L/∂a_c)[n,p] · h_c,

  R_b the removed filters' weight rows and biases (not γ, β: removal does not pass through zeroing
  them), a_c channel c of the activation's output summed over samples n and positions p (read by
  adding a zero probe per channel to that output: ∂L/∂probe_c = Σ_{n,p} ∂L/∂a_c). The activation is
  the elementwise module (``fp.scoring.graph``'s list: ReLU, GELU, ...) whose input is the
  BatchNorm's output; where none reads it (conv→ReLU→BN as in the paper's VGG, or a BatchNorm
  before a residual add) a_c is the BatchNorm's output and h_c = k_c; a filter with no following
  BatchNorm has k_c = 0 (its output is 0 once its weights and bias are). An activation called as a
  function (``F.relu``) is not seen, so there a_c is the pre-activation output. Residual-masked
  filters (``prune.residual = "masked"``) are zeroed by removal too: their term is the zeroing one,
  −Σ θ_i g_i over their weight row, bias, γ and β.

Zeroing and removal differ by exactly that constant: loss_removed − loss_zeroed is what dropping
the BatchNorm shift of the removed channels does, and predicted_removed − predicted_zeroed is its
first-order estimate. A residual-masked filter is zeroed entirely by both (weight row, bias, γ, β).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor, nn

from fp.nn import eval_mode, tempered_loss
from fp.scoring.graph import _ELEMENTWISE_MODULES as ELEMENTWISE

Batch = tuple[Tensor, Tensor]

#: elementwise modules that are the identity in eval mode: a_c is read after the next one
PASS_THROUGH = (nn.Identity, nn.modules.dropout._DropoutNd)


@dataclass
class Pass:
    """The mean loss over a set of batches, its gradient and, with probes, ∂L/∂probe."""

    loss: float
    grads: dict[str, Tensor]
    probes: "Probes | None" = None


def mean_loss(model: nn.Module, batches: list[Batch], temperature: float) -> float:
    """The mean loss over the samples of ``batches`` (eval mode)."""
    total = sum(len(y) for _, y in batches)
    with torch.no_grad(), eval_mode(model):
        return sum(float(tempered_loss(model(x), y, temperature, reduction="sum"))
                   for x, y in batches) / total


def gradient(model: nn.Module, batches: list[Batch], temperature: float,
             sources: dict[str, int] | None = None) -> Pass:
    """L and g = ∇L (the mean over samples; a batch counts by its size), in eval mode; with
    ``sources`` (module name -> channel dim of its output) also the probes' gradients."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = [torch.zeros_like(p) for _, p in named]
    total, loss = sum(len(y) for _, y in batches), 0.0
    probes = Probes(model, sources) if sources else None
    try:
        with eval_mode(model):
            for x, y in batches:
                batch = tempered_loss(model(x), y, temperature, reduction="sum") / total
                tensors = [p for _, p in named] + (probes.leaves() if probes else [])
                found = torch.autograd.grad(batch, tensors, allow_unused=True)
                for acc, g in zip(grads, found):
                    if g is not None:
                        acc += g
                if probes:
                    probes.accumulate(found[len(named):])
                loss += float(batch.detach())
    finally:
        if probes:
            probes.close()
    return Pass(loss, {n: g for (n, _), g in zip(named, grads)}, probes)


@dataclass
class Probes:
    """Zero probes added to the outputs of ``sources`` (BatchNorms, or layers with none after
    them) and of the elementwise activation that reads such an output; they leave the forward
    pass as it is and their gradients are Σ_{n,p} ∂L/∂(that output)_c."""

    model: nn.Module
    sources: dict[str, int]                       # module name -> channel dim of its output
    values: dict[tuple[str, str], Tensor] = field(default_factory=dict)  # (name, "source"|"act")
    sums: dict[tuple[str, str], Tensor] = field(default_factory=dict)
    activation: dict[str, nn.Module] = field(default_factory=dict)  # source -> its activation
    dims: dict[str, int] = field(default_factory=dict)              # source -> output rank
    handles: list = field(default_factory=list)                      # the forward hooks
    _made: dict[int, tuple[str, Tensor]] = field(default_factory=dict)
    _order: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        modules = dict(self.model.named_modules())
        self.handles += [modules[name].register_forward_hook(partial(self._source, name))
                        for name in self.sources]
        self.handles += [m.register_forward_hook(self._activation)
                         for m in modules.values() if isinstance(m, ELEMENTWISE)]

    def _probe(self, key: tuple[str, str], output: Tensor) -> Tensor:
        dim = self.sources[key[0]] % output.dim()
        if key not in self.values:
            self.values[key] = torch.zeros(output.shape[dim], dtype=output.dtype,
                                           device=output.device, requires_grad=True)
        shape = [1] * output.dim()
        shape[dim] = -1
        return output + self.values[key].view(shape)

    def _source(self, name: str, module: nn.Module, inputs, output: Tensor) -> Tensor:
        self.dims[name] = output.dim()
        probed = self._probe((name, "source"), output)
        self._made[id(probed)] = (name, probed)  # the tensor kept alive, so the id stays its own
        return probed

    def _activation(self, module: nn.Module, inputs, output: Tensor) -> Tensor | None:
        made = self._made.get(id(inputs[0])) if inputs else None
        if made is None or made[1] is not inputs[0]:
            return None
        if isinstance(module, PASS_THROUGH):  # identities in eval mode: the activation comes next
            self._made[id(output)] = (made[0], output)
            return None
        self.activation.setdefault(made[0], module)
        return self._probe((made[0], "act"), output)

    def leaves(self) -> list[Tensor]:
        self._order = list(self.values)
        return [self.values[key] for key in self._order]

    def accumulate(self, grads) -> None:
        for key, g in zip(self._order, grads):
            if g is not None:
                self.sums[key] = self.sums.get(key, 0) + g.detach()
        self._made.clear()

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self._made.clear()

    def read_at(self, source: str) -> tuple[Tensor, nn.Module | None] | None:
        """(Σ_{n,p} ∂L/∂a_c per channel, the activation that made a, or None), a as above."""
        act = self.activation.get(source)
        found = self.sums.get((source, "act" if act is not None else "source"))
        return None if found is None else (found, act)
