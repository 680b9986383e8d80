"""Batched random crop and horizontal flip of uint8 image batches, on the batch's device.

Split out of ``fp.data`` (which re-exports these names): one crop per sample in one call, a
gather on a GPU and row copies on a CPU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def augment_batch(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor,
                  padding: int) -> torch.Tensor:
    """Crop every image of a (B, C, H, W) batch at its own offset inside its zero-padded copy,
    mirroring the flagged ones. On a GPU one gather does it all; on a CPU, copying whole rows
    out of one padded buffer is 1.3-1.5x faster than that per-pixel gather."""
    if images.device.type == "cpu":
        return row_crop(images, offsets, flips, padding)
    return gather_crop(images, offsets, flips, padding)


def gather_crop(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor,
                padding: int) -> torch.Tensor:
    """``augment_batch`` as one gather over the padded batch, with no host synchronisation."""
    b, c, h, w = images.shape
    padded = F.pad(images, (padding,) * 4) if padding else images
    rows = offsets[:, :1] + torch.arange(h, device=images.device)        # (B, H)
    cols = offsets[:, 1:] + torch.arange(w, device=images.device)        # (B, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)               # mirror: read cols backwards
    # flat pixel index inside each padded image, shared by its channels (a 4x faster gather on CPU
    # than indexing all four dims)
    pixels = rows[:, :, None] * padded.shape[3] + cols[:, None, :]       # (B, H, W)
    pixels = pixels.view(b, 1, h * w).expand(b, c, h * w)
    return padded.flatten(2).gather(2, pixels).view(b, c, h, w)


def row_crop(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor,
             padding: int) -> torch.Tensor:
    """``augment_batch`` as one copy per output row (``W`` pixels) out of a padded buffer.

    Images to mirror are stored mirrored, after the others (one slice copy, where scattering them
    back to their own slots is slow): the mirror of the crop at column ``dx`` is the crop of the
    mirrored image at ``2 * padding - dx``, as the padding is the same on both sides."""
    b, c, h, w = images.shape
    hp, wp = h + 2 * padding, w + 2 * padding
    kept_images = (~flips).nonzero().view(-1)
    order = torch.cat([kept_images, flips.nonzero().view(-1)])          # slot -> image
    kept = len(kept_images)
    ordered = images.index_select(0, order)
    padded = images.new_zeros(b, c, hp, wp)
    inner = padded[:, :, padding:padding + h, padding:padding + w]
    inner[:kept] = ordered[:kept]
    inner[kept:] = ordered[kept:].flip(-1)
    slots = torch.empty_like(order)
    slots[order] = torch.arange(b, device=order.device)                 # image -> slot
    cols = torch.where(flips, 2 * padding - offsets[:, 1], offsets[:, 1])
    corners = slots * (c * hp * wp) + offsets[:, 0] * wp + cols          # (B,) flat top-left pixel
    steps = torch.arange(c, device=order.device)[:, None] * (hp * wp) \
        + torch.arange(h, device=order.device) * wp                      # (C, H) to each row
    starts = (corners[:, None, None] + steps).view(-1)
    runs = padded.view(-1).as_strided((padded.numel() - w + 1, w), (1, 1))  # every W-pixel run
    return runs.index_select(0, starts).view(b, c, h, w)
