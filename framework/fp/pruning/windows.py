"""Swin's shifted-window attention for any head count.

torchvision's ``shifted_window_attention`` derives the head width from the embedding width
(``C // num_heads``), which stops holding once heads are removed, and applies the ``qkv`` and
``proj`` weights with ``F.linear``, so FLOP counts find no FLOPs in those layers.
``window_attention`` computes the same function with the head width read from ``qkv`` and both
layers called as modules. fp gives every ShiftedWindowAttention it groups or loads this forward
by a class swap (``prunable_class``); parameters, buffers and names stay as they were.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_CLASSES: dict[type, type] = {}


def prunable_class(cls: type) -> type:
    """``cls`` (torchvision's ShiftedWindowAttention) with ``window_attention`` as forward."""
    if getattr(cls, "fp_window_heads", False):
        return cls
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"Prunable{cls.__name__}", (cls,), {
            "forward": window_attention, "fp_window_heads": True, "__module__": __name__,
            "__doc__": f"{cls.__name__} for any head count (see fp.pruning.windows)."})
    return _CLASSES[cls]


def window_attention(self: nn.Module, x: Tensor) -> Tensor:
    """(Shifted) window self-attention of ``x`` [B, H, W, C], head width from ``self.qkv``."""
    batch, height, width, channels = x.shape
    win_h, win_w = self.window_size
    heads, inner = self.num_heads, self.qkv.out_features // 3
    x = F.pad(x, (0, 0, 0, (-width) % win_w, 0, (-height) % win_h))
    padded_h, padded_w = x.shape[1], x.shape[2]
    shift = (0 if win_h >= padded_h else self.shift_size[0],
             0 if win_w >= padded_w else self.shift_size[1])
    if any(shift):
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    rows, cols, tokens = padded_h // win_h, padded_w // win_w, win_h * win_w
    windows = x.view(batch, rows, win_h, cols, win_w, channels).permute(0, 1, 3, 2, 4, 5)
    windows = windows.reshape(batch * rows * cols, tokens, channels)

    qkv = self.qkv(windows)
    q, k, v = qkv.reshape(len(windows), tokens, 3, heads, inner // heads).permute(2, 0, 3, 1, 4)
    attn = (q * (inner // heads) ** -0.5) @ k.transpose(-2, -1)
    attn = attn + self.get_relative_position_bias()
    if any(shift):
        mask = window_mask(x, (win_h, win_w), shift)
        attn = attn.view(batch, rows * cols, heads, tokens, tokens) + mask[None, :, None]
        attn = attn.view(-1, heads, tokens, tokens)
    attn = F.dropout(attn.softmax(dim=-1), p=self.attention_dropout, training=self.training)
    out = (attn @ v).transpose(1, 2).reshape(len(windows), tokens, inner)
    out = F.dropout(self.proj(out), p=self.dropout, training=self.training)

    out = out.view(batch, rows, cols, win_h, win_w, channels).permute(0, 1, 3, 2, 4, 5)
    out = out.reshape(batch, padded_h, padded_w, channels)
    if any(shift):
        out = torch.roll(out, shifts=shift, dims=(1, 2))
    return out[:, :height, :width, :].contiguous()


def window_mask(x: Tensor, window: tuple[int, int], shift: tuple[int, int]) -> Tensor:
    """-100 between tokens of one window that came from different regions before the cyclic
    shift, 0 elsewhere: [windows, tokens, tokens]."""
    padded_h, padded_w = x.shape[1], x.shape[2]
    regions = x.new_zeros((padded_h, padded_w))
    label = 0
    for h in ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None)):
        for w in ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None)):
            regions[h[0]:h[1], w[0]:w[1]] = label
            label += 1
    regions = regions.view(padded_h // window[0], window[0], padded_w // window[1], window[1])
    regions = regions.permute(0, 2, 1, 3).reshape(-1, window[0] * window[1])
    differs = regions.unsqueeze(1) != regions.unsqueeze(2)
    return torch.zeros_like(differs, dtype=x.dtype).masked_fill(differs, -100.0)


__all__ = ["prunable_class", "window_attention", "window_mask"]
