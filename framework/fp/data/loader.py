"""Datasets held in memory as uint8 tensors, and the loader that batches them on the device."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from fp.data.transforms import Augmentation, BatchTransform, augment_params, shard_order
from fp.data.dataset import Dataset
from fp.errors import ConfigError, DataError

SPLITS = ("train", "test")


def check_loader_args(split: str, batch_size: int, rank: int, world_size: int, owner: str) -> None:
    if split not in SPLITS:
        raise DataError(f"dataset {owner!r} has no split {split!r}; use 'train' or 'test'.")
    if batch_size < 1:
        raise ConfigError(f"batch size must be a positive integer, got {batch_size!r}.")
    if not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is outside a world of size {world_size}.")


def batches_per_epoch(num_samples: int, batch_size: int, drop_last: bool) -> int:
    return num_samples // batch_size if drop_last else math.ceil(num_samples / batch_size)


@dataclass
class Split:
    """One split held in memory: uint8 images (N, C, H, W) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor


class TensorLoader:
    """Batches drawn from uint8 tensors already on the device; see :class:`fp.Loader`."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: BatchTransform, *,
                 batch_size: int, shuffle: bool, augment: bool, seed: int, rank: int,
                 world_size: int, drop_last: bool):
        self.images, self.labels, self.transform = images, labels, transform
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.seed, self.rank, self.world_size, self.drop_last = seed, rank, world_size, drop_last
        self.epoch = 0
        self.num_samples = len(images) if world_size == 1 else len(images) // world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return batches_per_epoch(self.num_samples, self.batch_size, self.drop_last)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        device = self.images.device
        with one_cpu_thread(device):
            order, offsets, flips = self._epoch_plan(device)
        for i in range(len(self)):
            span = slice(i * self.batch_size, (i + 1) * self.batch_size)
            with one_cpu_thread(device):  # not across the yield: the training step keeps its own
                index = order[span]
                jitter = () if offsets is None else (offsets[span], flips[span])
                batch = (self.transform(self.images.index_select(0, index), *jitter),
                         self.labels.index_select(0, index))
            yield batch

    def _epoch_plan(self, device: torch.device):
        """This epoch's example order and, when augmenting, every example's offsets and flip."""
        order = shard_order(len(self.images), shuffle=self.shuffle, seed=self.seed,
                            epoch=self.epoch, rank=self.rank, world_size=self.world_size)
        if not self.augment:
            return order.to(device), None, None
        offsets, flips = augment_params(len(order), self.transform.augmentation,
                                        seed=self.seed, epoch=self.epoch, rank=self.rank)
        return order.to(device), offsets.to(device), flips.to(device)


@contextlib.contextmanager
def one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Assemble CPU batches on one thread. Copying a batch is too little work to share: with
    torch's default of one thread per core, every op waits for all of them, and when other
    processes hold the cores that wait is a scheduler time slice per op (a 2-core machine with
    two busy processes made an epoch ~17x slower on two threads than on one)."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class InMemoryDataset(Dataset):
    """Base for datasets that fit in memory as uint8 tensors; subclasses call :meth:`set_data`.

    A subclass that can also stream from disk sets ``in_memory = False`` when it does, and then
    serves its own ``loader`` (class-balanced subsets, ``fp.data.subsets``, need the held form)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    augmentation: Augmentation
    in_memory: bool = True

    def set_data(self, train: Split, test: Split, *, num_classes: int, mean: Sequence[float],
                 std: Sequence[float], augmentation: Augmentation) -> None:
        for split_name, split in (("train", train), ("test", test)):
            self._check_split(split_name, split, num_classes)
        self.splits = {"train": train, "test": test}
        self.num_classes = num_classes
        self.in_channels = train.images.shape[1]
        self.image_size = tuple(train.images.shape[2:])
        self.mean, self.std, self.augmentation = tuple(mean), tuple(std), augmentation
        self._on_device: dict[tuple[str, str], Split] = {}

    def _check_split(self, split_name: str, split: Split, num_classes: int) -> None:
        images, labels = split.images, split.labels
        if images.dtype != torch.uint8 or images.dim() != 4 or len(images) != len(labels):
            raise DataError(f"dataset {self.name!r} {split_name} split is malformed: expected "
                            f"uint8 (N, C, H, W) images with one label each.")
        if len(labels) == 0 or labels.min() < 0 or labels.max() >= num_classes:
            raise DataError(f"dataset {self.name!r} {split_name} split is empty or has labels "
                            f"outside 0..{num_classes - 1}.")

    def __len__(self) -> int:
        return len(self.splits["train"].labels)

    def keep(self, split: str, index: torch.Tensor) -> None:
        """Hold only the examples at ``index`` of ``split`` (a subset), in that order."""
        held = self.splits[split]
        self.splits[split] = Split(held.images[index].contiguous(), held.labels[index])
        self._on_device = {k: v for k, v in self._on_device.items() if k[0] != split}

    def on_device(self, split: str, device: torch.device) -> Split:
        """The split moved to ``device`` once and cached there."""
        key = (split, str(device))
        if key not in self._on_device:
            held = self.splits[split]
            self._on_device[key] = Split(held.images.to(device), held.labels.to(device))
        return self._on_device[key]

    def loader(self, split: str, batch_size: int, *, shuffle: bool = False, augment: bool = False,
               device: torch.device | str = "cpu", seed: int = 0, rank: int = 0,
               world_size: int = 1, drop_last: bool = False) -> TensorLoader:
        check_loader_args(split, batch_size, rank, world_size, self.name)
        device = torch.device(device)
        held = self.on_device(split, device)
        transform = BatchTransform(self.mean, self.std, self.augmentation, device)
        return TensorLoader(held.images, held.labels, transform, batch_size=batch_size,
                            shuffle=shuffle, augment=augment and self.augmentation.active,
                            seed=seed, rank=rank, world_size=world_size, drop_last=drop_last)
