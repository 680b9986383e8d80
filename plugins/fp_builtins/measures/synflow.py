"""SynFlow: data-free synaptic flow (Tanaka et al. 2020)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import fp
from fp.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    import torch


class SynFlow(fp.Measure):
    """Data-free synaptic flow |θ ⊙ ∂R/∂θ| of the linearised network (Tanaka et al. 2020).

    Seed name: none. As in the reference implementation the network is evaluated on |·| of every
    floating state entry (parameters and BatchNorm running statistics), in float64 and eval mode,
    on one all-ones input, and R is the sum of its outputs. The |·| state is handed to the model
    through ``torch.func.functional_call`` instead of a deep copy (which cost more than the
    flow itself); the model's own tensors and modes are left as they were.
    """

    name = "synflow"
    needs_data = False

    def __call__(self, ctx):
        if ctx.input_shape is None:
            raise DataError("synflow needs the input shape: give one scoring batch or "
                            "ScoreContext(input_shape=...).")
        import torch  # here, not at import: `fp list measures` does not need torch
        from torch.func import functional_call

        from fp.nn import eval_mode

        state = linearised_state(ctx.model)
        weights = [state[n].requires_grad_(True) for n in ctx.weights]
        ones = torch.ones((1, *ctx.input_shape), dtype=torch.float64, device=ctx.device)
        with eval_mode(ctx.model), torch.enable_grad():
            flow = functional_call(ctx.model, state, (ones,)).sum()
            grads = torch.autograd.grad(flow, weights, allow_unused=True)
        return {n: (w * g).abs().detach() if g is not None else torch.zeros_like(w).detach()
                for n, w, g in zip(ctx.weights, weights, grads)}


def linearised_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """|·| in float64 of every floating parameter and buffer, as fresh leaf tensors; integer
    buffers (BatchNorm's num_batches_tracked) are left out, so the model's own are used."""
    named = [*model.named_parameters(), *model.named_buffers()]
    return {name: tensor.detach().abs().double() for name, tensor in named
            if tensor.is_floating_point()}
