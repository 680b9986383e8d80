"""scikit-learn's bundled handwritten digits: real data, no download (offline quickstart, tests)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from fp.data import Augmentation, InMemoryDataset, Split, channel_stats

_MAX_INK = 16  # load_digits pixels count ink in 0..16


class Digits(InMemoryDataset):
    """Handwritten digits (scikit-learn, 1,797 real 8x8 scans upsampled), 10 classes, no download."""

    name = "digits"

    def __init__(self, size: int = 16, augment: bool = True, crop_padding: int = 2,
                 flip: bool = False):
        bunch = load_digits()
        images = _to_uint8(torch.as_tensor(bunch.images, dtype=torch.float32), size)
        labels = torch.as_tensor(bunch.target, dtype=torch.int64)
        # fixed stratified 80/20 split: the same 1,437 / 360 examples on every machine
        train_idx, test_idx = train_test_split(torch.arange(len(labels)).numpy(), test_size=0.2,
                                               stratify=bunch.target, random_state=0)
        train = Split(images[train_idx], labels[train_idx])
        test = Split(images[test_idx], labels[test_idx])
        mean, std = channel_stats(train.images)
        # a mirrored 2 is not a 2: crop jitter only, unless asked otherwise
        policy = Augmentation(crop_padding if augment else 0, flip and augment)
        self.set_data(train, test, num_classes=10, mean=mean, std=std, augmentation=policy)


def _to_uint8(ink: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 8, 8) ink counts -> (N, 1, size, size) uint8, resized bilinearly once at load."""
    resized = F.interpolate(ink[:, None], size=(size, size), mode="bilinear", align_corners=False)
    return (resized * (255 / _MAX_INK)).round().clamp(0, 255).to(torch.uint8)
