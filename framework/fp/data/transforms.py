"""Per-epoch randomness and the batch transform: shuffles and augmentation parameters drawn from
``(seed, epoch, rank)``, and uint8 -> normalised float conversion on the batch's device."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from fp.data.crop import augment_batch


@dataclass(frozen=True)
class Augmentation:
    """The paper's training augmentation: random crop after zero padding, random h-flip."""

    crop_padding: int = 4   # pixels of zero padding on each side before the random crop
    flip: bool = True       # off for data that is not mirror-invariant (digits)

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.flip


def seeded_generator(*keys: int) -> torch.Generator:
    """A CPU generator whose seed is a well-mixed function of ``keys`` (seed, epoch, ...)."""
    words = [int(k) & 0xFFFFFFFFFFFFFFFF for k in keys]
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def shard_order(n: int, *, shuffle: bool, seed: int, epoch: int, rank: int = 0,
                world_size: int = 1) -> torch.Tensor:
    """Rank ``rank``'s example indices for ``epoch``: ``perm[rank::world_size]`` cut to the
    common length ``n // world_size``, so shards are disjoint and equally long."""
    order = torch.randperm(n, generator=seeded_generator(seed, epoch)) if shuffle \
        else torch.arange(n)
    if world_size == 1:
        return order
    return order[rank::world_size][: n // world_size]


def augment_params(n: int, augmentation: Augmentation, *, seed: int, epoch: int,
                   rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample crop offsets ``(n, 2)`` in ``[0, 2 * padding]`` and flip flags ``(n,)``."""
    gen = seeded_generator(seed, epoch, rank, 1)  # stream 1: independent of the shuffle
    offsets = torch.randint(0, 2 * augmentation.crop_padding + 1, (n, 2), generator=gen)
    flips = torch.rand(n, generator=gen) < 0.5
    return offsets, flips & augmentation.flip


class BatchTransform:
    """uint8 batch -> (augmented) normalised float batch, on the batch's device."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], augmentation: Augmentation,
                 device: torch.device):
        # (x / 255 - mean) / std folded into one subtract and one multiply, in 0..255 units
        self.shift = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255
        self.scale = 1 / (torch.tensor(std, device=device).view(1, -1, 1, 1) * 255)
        self.augmentation = augmentation

    def __call__(self, images: torch.Tensor, offsets: torch.Tensor | None = None,
                 flips: torch.Tensor | None = None) -> torch.Tensor:
        if offsets is not None:
            images = augment_batch(images, offsets, flips, self.augmentation.crop_padding)
        return images.float().sub_(self.shift).mul_(self.scale)


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], ...]:
    """Per-channel mean and std of uint8 (N, C, H, W) images on the 0..1 scale."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(images), chunk):  # chunks: a float64 copy of all of it is large
        block = images[start:start + chunk].double().transpose(0, 1).flatten(1) / 255
        total += block.sum(1)
        squares += (block * block).sum(1)
    count = images.numel() / images.shape[1]
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())
