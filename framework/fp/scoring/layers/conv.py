"""A convolution whose backward is itself an autograd Function with a written-out backward, so a
Hessian-vector product through it costs two forward convolutions and one convolution_backward
(``double_backward`` swaps it in). Optional per-filter scales s multiply the output channels;
their gradient is what the filter-wise Hg of ``fp.scoring.hvp.filterwise`` differentiates with
respect to. A ``Geometry`` made with ``matmul=True`` (where ``shortcuts`` decided that a
convolution's weight gradient is cheaper as one matrix product) takes every weight gradient so,
and ``gradient_pass`` runs such convolutions through it in plain gradient passes too.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class Geometry(NamedTuple):
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    by_matmul: bool = False  # weight gradients as one matrix product (2-d, ungrouped only)

    def matmul(self) -> "Geometry":
        """This geometry, taking weight gradients as one matrix product."""
        return self._replace(by_matmul=True)

    def convolve(self, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        return torch.convolution(x, weight, bias, self.stride, self.padding, self.dilation,
                                 False, [0] * len(self.stride), self.groups)

    def backward(self, grad_out: Tensor, x: Tensor, weight: Tensor,
                 mask: tuple[bool, bool, bool]) -> tuple[Tensor | None, ...]:
        """(∂x, ∂W, ∂b) of ⟨grad_out, conv(x, W) + b⟩, those ``mask`` asks for; ∂W as one
        matrix product if this geometry says so."""
        by_matmul = (mask[1] and self.by_matmul and x.dim() == 4 and self.groups == 1)
        wanted = (mask[0], mask[1] and not by_matmul, mask[2])
        grads = (None, None, None)
        if any(wanted):
            grads = torch.ops.aten.convolution_backward(
                grad_out, x, weight, [weight.shape[0]] if mask[2] else None, self.stride,
                self.padding, self.dilation, False, [0] * len(self.stride), self.groups,
                list(wanted))
        grad_w = self._matmul_weight_grad(grad_out, x, weight) if by_matmul else grads[1]
        return tuple(g if asked else None for g, asked in zip((grads[0], grad_w, grads[2]), mask))

    def output_shape(self, x: Tensor, weight: Tensor) -> tuple[int, ...]:
        """The shape of ``convolve(x, weight)``."""
        sizes = [(n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in zip(
            x.shape[2:], weight.shape[2:], self.stride, self.padding, self.dilation)]
        return (x.shape[0], weight.shape[0], *sizes)

    def _matmul_weight_grad(self, grad_out: Tensor, x: Tensor, weight: Tensor) -> Tensor:
        n, filters = grad_out.shape[:2]
        cols = torch.nn.functional.unfold(x, weight.shape[2:], self.dilation, self.padding,
                                          self.stride)  # N × (C·k·k) × L
        flat_grad = grad_out.reshape(n, filters, -1).transpose(0, 1).reshape(filters, -1)
        return (flat_grad @ cols.transpose(1, 2).reshape(-1, cols.shape[1])).view_as(weight)


def _channel_sum(a: Tensor, b: Tensor) -> Tensor:
    """Σ over everything but the channel dimension of a ⊙ b: one number per channel."""
    return (a * b).sum([d for d in range(a.dim()) if d != 1])


class Convolution(torch.autograd.Function):
    """conv(x, W) + b, whose backward is ``ConvolutionGrad`` (differentiable, cheaply).

    ``scale`` (optional) is a vector of ones, one per filter p, multiplying the filters:
    ∂/∂scale_p of ⟨c, conv(x, W)⟩ is Σ_{i∈p} W_i ∂/∂W_i, read off the output as ⟨c_p, y_p⟩ with
    no weight-gradient convolution. With a scale, the layer serves filter-wise Hessian products
    (``fp.scoring.hvp.filterwise``): its first backward gives ∂x, ∂W, ∂b (∂W taken with respect
    to the scaled weight), its second ∂x and ∂scale only.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, scale: Tensor | None,
                geometry: Geometry):
        ctx.geometry, ctx.scaled, ctx.differentiated = geometry, scale is not None, False
        if scale is None:
            ctx.save_for_backward(x, weight, None, None)
            return geometry.convolve(x, weight, bias)
        out = geometry.convolve(x, weight)  # scale is all ones: the filters as they are
        ctx.save_for_backward(x, weight, out, scale)
        # a new tensor either way, so that an in-place activation cannot touch the saved ``out``
        return out + bias.view(1, -1, *[1] * (out.dim() - 2)) if bias is not None else out.clone()

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, weight, out, scale = ctx.saved_tensors
        mask = tuple(ctx.needs_input_grad[:3])
        if ctx.scaled and ctx.differentiated:  # the second time: filter-wise products only
            grad_x = ctx.geometry.backward(grad_out, x, weight, (mask[0], False, False))[0]
            return grad_x, None, None, _channel_sum(grad_out, out), None
        ctx.differentiated = True
        grads = ConvolutionGrad.apply(grad_out, x, weight, scale, ctx.geometry, mask)
        return (*grads, None, None)


class ConvolutionGrad(torch.autograd.Function):
    """(grad_out, x, W) ↦ (∂x, ∂W, ∂b): bilinear in grad_out and (x, W), so its backward has a
    closed form (see the module docstring). With ``scale``, its backward gives ∂scale_p =
    ⟨conv(a_x, W)_p, grad_out_p⟩ in place of ∂W."""

    @staticmethod
    def forward(ctx, grad_out: Tensor, x: Tensor, weight: Tensor, scale: Tensor | None,
                geometry: Geometry, mask: tuple[bool, bool, bool]):
        ctx.set_materialize_grads(False)  # a missing cotangent stays None: no convolving zeros
        ctx.save_for_backward(grad_out, x, weight)
        ctx.geometry, ctx.scaled = geometry, scale is not None
        return geometry.backward(grad_out, x, weight, mask)

    @staticmethod
    def backward(ctx, a_x: Tensor | None, a_w: Tensor | None, a_b: Tensor | None):
        grad_out, x, weight = ctx.saved_tensors
        geometry = ctx.geometry
        conv_a_x = geometry.convolve(a_x, weight) if a_x is not None else None
        d_scale = (_channel_sum(conv_a_x, grad_out) if ctx.scaled and conv_a_x is not None
                   else None)
        d_grad_out = None
        if ctx.needs_input_grad[0]:  # fresh convolution outputs: accumulate in place
            d_grad_out = conv_a_x
            if a_w is not None:
                term = geometry.convolve(x, a_w)
                d_grad_out = term if d_grad_out is None else d_grad_out.add_(term)
            if a_b is not None:
                bias = a_b.view(1, -1, *[1] * (grad_out.dim() - 2))
                d_grad_out = (bias.expand_as(grad_out).clone() if d_grad_out is None
                              else d_grad_out.add_(bias))
        # ∂x of ⟨a_w, ∂W⟩ is the input gradient with a_w as weight; ∂W of ⟨a_x, ∂x⟩ is the
        # weight gradient with a_x as input: one convolution_backward gives both
        want_x = ctx.needs_input_grad[1] and a_w is not None
        want_w = ctx.needs_input_grad[2] and a_x is not None and not ctx.scaled
        d_x = d_w = None
        if want_x or want_w:
            d_x, d_w, _ = geometry.backward(grad_out, a_x if want_w else x,
                                            a_w if want_x else weight, (want_x, want_w, False))
        return d_grad_out, d_x, d_w, d_scale, None, None
