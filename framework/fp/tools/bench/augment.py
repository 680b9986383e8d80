"""The data path: fp's batched in-memory augmentation against the usual per-image pipeline
(PIL images, torchvision transforms, a DataLoader with worker processes) over the same images."""
from __future__ import annotations

from typing import Any

import torch
import torchvision.transforms as T
from PIL import Image

from fp.timing import measure_ratio
from fp.tools.bench.rows import make_row
from fp.data import InMemoryDataset

#: images/s of fp's loader over the per-image pipeline's
TARGET = ">= 5"


class PilImages(torch.utils.data.Dataset):
    """The same uint8 images as PIL images, transformed one at a time (torchvision's CIFAR way)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images]
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[index]), self.labels[index]


def per_image_loader(dataset: InMemoryDataset, batch_size: int, workers: int,
                     device: torch.device) -> torch.utils.data.DataLoader:
    split = dataset.splits["train"]
    size = tuple(dataset.image_size)
    transform = T.Compose([T.RandomCrop(size, padding=dataset.augmentation.crop_padding),
                           T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(dataset.mean, dataset.std)])
    # persistent workers: worker start-up is paid once, in the warm-up, in the baseline's favour
    return torch.utils.data.DataLoader(PilImages(split.images, split.labels, transform),
                                       batch_size=batch_size, shuffle=True, num_workers=workers,
                                       persistent_workers=workers > 0,
                                       pin_memory=device.type == "cuda")


def augment_row(dataset: InMemoryDataset, *, batch_size: int, workers: int, repeats: int,
                device: torch.device) -> dict[str, Any]:
    """Both sides deliver one epoch of augmented, normalised float batches on ``device``."""
    fast = dataset.loader("train", batch_size, shuffle=True, augment=True, device=device)
    slow = per_image_loader(dataset, batch_size, workers, device)
    epochs = iter(range(1, 1 << 30))

    def fp_epoch() -> None:
        fast.set_epoch(next(epochs))  # fresh crops and flips, as in training
        for _ in fast:  # the loader's work happens as batches are drawn
            pass

    def per_image_epoch() -> None:
        for x, y in slow:  # delivered where fp's batches already are
            x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    timing = measure_ratio(fp_epoch, per_image_epoch, repeats=repeats, device=device)
    shape = tuple(dataset.splits["train"].images.shape[1:])
    return make_row("augment", timing, TARGET, speedup=True,
                    baseline=f"per-image PIL + torchvision transforms, DataLoader with "
                             f"{workers} workers",
                    notes=f"{len(dataset)} images of {shape} per epoch, batch {batch_size}; "
                          f"ratio = images/s over the baseline's")
