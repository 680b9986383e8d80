"""SynFlow: data-free synaptic flow (Tanaka et al. 2020)."""
import copy

import torch

import fp
from fp.errors import DataError


class SynFlow(fp.Measure):
    """Data-free synaptic flow |θ ⊙ ∂R/∂θ| of the linearised network (Tanaka et al. 2020).

    Seed name: none. As in the reference implementation the scored copy holds |·| of every
    floating state entry (parameters and BatchNorm running statistics), runs in float64 and eval
    mode on one all-ones input, and R is the sum of its outputs; the model itself is not touched.
    """

    name = "synflow"
    needs_data = False

    def __call__(self, ctx):
        if ctx.input_shape is None:
            raise DataError("synflow needs the input shape: give one scoring batch or "
                            "ScoreContext(input_shape=...).")
        linear = copy.deepcopy(ctx.model).double().eval()
        with torch.no_grad():
            for tensor in linear.state_dict().values():
                if tensor.is_floating_point():
                    tensor.abs_()
        weights = [linear.get_parameter(n).requires_grad_(True) for n in ctx.weights]
        ones = torch.ones((1, *ctx.input_shape), dtype=torch.float64, device=ctx.device)
        with torch.enable_grad():
            flow = linear(ones).sum()
            grads = torch.autograd.grad(flow, weights, allow_unused=True)
        return {n: (w * g).abs().detach() if g is not None else torch.zeros_like(w).detach()
                for n, w, g in zip(ctx.weights, weights, grads)}
