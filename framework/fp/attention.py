"""Multi-head attention whose heads fp can score and prune, and the swap that puts it in place of
``nn.MultiheadAttention`` (``fp.prune`` and ``fp.pruning.build_model`` swap it into every model they are given or build).

``nn.MultiheadAttention`` keeps its q, k and v projections in the bare parameter
``in_proj_weight``, which no measure scores (measures score conv and linear weights), and its
forward ties the head width to the embedding width. ``HeadAttention`` computes the same function
with that projection as an ``nn.Linear`` named ``qkv`` and a forward that reads ``num_heads`` and
``head_dim``, so each head's q, k and v rows are scored filters and whole heads can go
(``fp_prunable_heads``). It loads ``nn.MultiheadAttention`` state dicts too.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fp.errors import ConfigError

RENAMED = {"in_proj_weight": "qkv.weight", "in_proj_bias": "qkv.bias"}


class HeadAttention(nn.Module):
    """Multi-head attention with a ``qkv`` Linear: nn.MultiheadAttention's arguments and call,
    self- or cross-attention of 3-d inputs."""

    fp_prunable_heads = True

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 batch_first: bool = False) -> None:
        super().__init__()
        if num_heads < 1 or embed_dim % num_heads:
            raise ConfigError(f"an attention of width {embed_dim} cannot have {num_heads} heads; "
                              f"the width must be a multiple of the head count.")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.dropout, self.batch_first = dropout, batch_first
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        nn.init.xavier_uniform_(self.qkv.weight)  # as nn.MultiheadAttention initialises
        if bias:
            nn.init.zeros_(self.qkv.bias)
            nn.init.zeros_(self.out_proj.bias)
        self._register_load_state_dict_pre_hook(renamed_keys)

    def forward(self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None,
                key_padding_mask: Tensor | None = None, need_weights: bool = True,
                attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        key = query if key is None else key
        value = key if value is None else value
        if query.dim() != 3:
            raise ConfigError(f"HeadAttention takes batched 3-d inputs, not shape "
                              f"{tuple(query.shape)}.")
        q, k, v = self.project(query, key, value)
        mask = merged_mask(attn_mask, key_padding_mask, q)
        if mask is None and is_causal:
            mask = causal_mask(q, k)
        # plain products, not scaled_dot_product_attention: its CPU kernel has no double
        # backward, which Hessian-based measures (grasp, grad_norm) need
        scores = q @ k.transpose(-2, -1) * self.head_dim ** -0.5
        if mask is not None:
            scores = scores + mask
        weights = F.dropout(scores.softmax(-1), self.dropout, self.training)
        out = weights @ v
        out = self.out_proj(out.transpose(1, 2).flatten(2))
        if need_weights and average_attn_weights:
            weights = weights.mean(1)
        out = out if self.batch_first else out.transpose(0, 1)
        return out, (weights if need_weights else None)

    def project(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q, k and v, each [batch, heads, tokens, head_dim]."""
        if query is key is value:
            parts = self.qkv(query).chunk(3, dim=-1)
        else:
            weights = self.qkv.weight.chunk(3)
            biases = self.qkv.bias.chunk(3) if self.qkv.bias is not None else (None,) * 3
            parts = [F.linear(x, w, b) for x, w, b in zip((query, key, value), weights, biases)]
        return tuple(self.heads(p if self.batch_first else p.transpose(0, 1)) for p in parts)

    def heads(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)


def renamed_keys(state_dict: dict, prefix: str, *args) -> None:
    """Read nn.MultiheadAttention's parameter names as HeadAttention's."""
    for old, new in RENAMED.items():
        if prefix + old in state_dict:
            state_dict[prefix + new] = state_dict.pop(prefix + old)


def merged_mask(attn_mask: Tensor | None, key_padding_mask: Tensor | None,
                q: Tensor) -> Tensor | None:
    """One additive float mask from nn.MultiheadAttention's masks (True = not attended)."""
    masks = []
    if attn_mask is not None:
        masks.append(attn_mask if attn_mask.dim() == 2 else attn_mask.view(
            q.shape[0], q.shape[1], *attn_mask.shape[-2:]))
    if key_padding_mask is not None:
        masks.append(key_padding_mask[:, None, None, :])
    if not masks:
        return None
    total = torch.zeros((), dtype=q.dtype, device=q.device)
    for mask in masks:
        total = total + (torch.zeros_like(mask, dtype=q.dtype).masked_fill(mask, float("-inf"))
                         if mask.dtype == torch.bool else mask.to(q.dtype))
    return total


def causal_mask(q: Tensor, k: Tensor) -> Tensor:
    blocked = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).triu(1)
    return torch.zeros_like(blocked, dtype=q.dtype).masked_fill(blocked, float("-inf"))


def expose_heads(model: nn.Module) -> nn.Module:
    """Replace every nn.MultiheadAttention of ``model`` (in place) by a HeadAttention holding
    the same weights, so that fp scores and prunes its heads; returns ``model``."""
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.MultiheadAttention):
            continue
        if not module._qkv_same_embed_dim or module.bias_k is not None or module.add_zero_attn:
            raise ConfigError(f"the attention {name!r} has separate key/value widths or extra "
                              f"key/value biases, which HeadAttention does not reproduce.")
        swap = HeadAttention(module.embed_dim, module.num_heads, module.dropout,
                             bias=module.in_proj_bias is not None, batch_first=module.batch_first)
        swap.load_state_dict(module.state_dict())
        swap.to(module.in_proj_weight.device, module.in_proj_weight.dtype).train(module.training)
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, swap)
    return model
