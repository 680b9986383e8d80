"""Random images with random labels: a deterministic stand-in for benchmarks and smoke tests."""
from __future__ import annotations

import torch

from fp.data import Augmentation, InMemoryDataset, Split, channel_stats, seeded_generator
from fp.errors import ConfigError


class Synthetic(InMemoryDataset):
    """Random uint8 images with random labels (deterministic from seed), for benchmarks."""

    name = "synthetic"

    def __init__(self, num_train: int = 1024, num_test: int = 256,
                 shape: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10, seed: int = 0,
                 augment: bool = True, crop_padding: int = 4, flip: bool = True):
        if min(num_train, num_test, num_classes, *shape) < 1 or len(shape) != 3:
            raise ConfigError(f"synthetic needs positive num_train, num_test, num_classes and a "
                              f"(C, H, W) shape, got {num_train}, {num_test}, {num_classes}, "
                              f"{tuple(shape)}.")
        gen = seeded_generator(seed)
        train, test = (_random_split(n, tuple(shape), num_classes, gen)
                       for n in (num_train, num_test))
        mean, std = channel_stats(train.images)
        policy = Augmentation(crop_padding if augment else 0, flip and augment)
        self.set_data(train, test, num_classes=num_classes, mean=mean, std=std,
                      augmentation=policy)


def _random_split(n: int, shape: tuple[int, ...], num_classes: int,
                  gen: torch.Generator) -> Split:
    images = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, num_classes, (n,), generator=gen)
    return Split(images, labels)
