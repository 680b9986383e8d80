"""Your own images, laid out as ``<root>/{train,test}/<class>/<image>``: decoded once and held in
memory as uint8 (CIFAR's fast path) when they fit a memory budget, else streamed from disk."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Sequence

import torch
from torch.utils.data import DataLoader
from torchvision import transforms

from fp.data import Augmentation, BatchTransform, InMemoryDataset, Split, check_loader_args
from fp.errors import ConfigError
from fp_builtins.datasets._folder_cache import decoded_images
from fp_builtins.datasets._folder_stream import EpochSampler, FolderLoader, read_folder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_MEMORY_BUDGET_GB = 4.0  # CIFAR-10 decodes to 0.18 GB; 64-px ImageNet (16 GB) would stream


class ImageFolder(InMemoryDataset):
    """Images in <root>/train/<class>/ and <root>/test/<class>/ folders, resized to image_size.

    ``in_memory``: ``"auto"`` (default) decodes the folder once into uint8 tensors, held on the
    training device and augmented a batch at a time exactly as CIFAR is, when the decoded images
    (``N x 3 x image_size^2`` bytes, both splits) fit ``memory_budget_gb`` gigabytes (2^30
    bytes), and streams them otherwise; ``True`` insists on memory (an error if over budget);
    ``False`` streams through DataLoader workers. The decoded images are cached as
    ``fp-decoded-<size>px-<hash>.npz`` in ``root`` (else under ``fp.data.default_data_root()``),
    so later runs start at once; a changed file changes the hash. ``num_workers``: DataLoader
    workers when streaming, decoding threads otherwise (default: up to 4, one per core).
    """

    name = "imagefolder"

    def __init__(self, root: str | None = None, image_size: int = 32,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 augment: bool = True, crop_padding: int = 4, flip: bool = True,
                 num_workers: int | None = None, in_memory: bool | Literal["auto"] = "auto",
                 memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB):
        if not root:
            raise ConfigError("dataset 'imagefolder' needs a folder: bind imagefolder.root.")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ConfigError(f"imagefolder.image_size = {image_size!r} must be a positive "
                              f"integer (pixels).")
        self.root = Path(root).expanduser()
        to_uint8 = transforms.Compose([transforms.Resize((image_size, image_size)),
                                       transforms.PILToTensor()])
        train = read_folder(self.root / "train", to_uint8, None)
        folders = {"train": train,
                   "test": read_folder(self.root / "test", to_uint8, train.class_to_idx)}
        self.classes = list(train.classes)
        self.num_workers = min(4, os.cpu_count() or 1) if num_workers is None else num_workers
        policy = Augmentation(crop_padding if augment else 0, flip and augment)
        self.in_memory, self.streaming_reason = hold_in_memory(
            in_memory, sum(len(f) for f in folders.values()), image_size, memory_budget_gb)
        self.cache_path: Path | None = None
        self.cache_hit = False
        if self.in_memory:
            self._hold(folders, image_size, mean, std, policy)
        else:
            self._stream(folders, image_size, mean, std, policy)

    def _hold(self, folders, image_size: int, mean, std, policy: Augmentation) -> None:
        samples = {split: list(folder.samples) for split, folder in folders.items()}
        images, self.cache_path, self.cache_hit = decoded_images(
            self.root, samples, image_size, max(1, self.num_workers))
        splits = {split: Split(images[split], torch.tensor([label for _, label in files],
                                                           dtype=torch.int64))
                  for split, files in samples.items()}
        self.set_data(splits["train"], splits["test"], num_classes=len(self.classes), mean=mean,
                      std=std, augmentation=policy)

    def _stream(self, folders, image_size: int, mean, std, policy: Augmentation) -> None:
        self.folders = folders
        self.num_classes = len(self.classes)
        self.in_channels = 3  # torchvision's loader converts every image to RGB
        self.image_size = (image_size, image_size)
        self.mean, self.std, self.augmentation = tuple(mean), tuple(std), policy

    def __len__(self) -> int:
        return super().__len__() if self.in_memory else len(self.folders["train"])

    def loader(self, split: str, batch_size: int, *, shuffle: bool = False, augment: bool = False,
               device: torch.device | str = "cpu", seed: int = 0, rank: int = 0,
               world_size: int = 1, drop_last: bool = False):
        if self.in_memory:
            return super().loader(split, batch_size, shuffle=shuffle, augment=augment,
                                  device=device, seed=seed, rank=rank, world_size=world_size,
                                  drop_last=drop_last)
        check_loader_args(split, batch_size, rank, world_size, self.name)
        device = torch.device(device)
        sampler = EpochSampler(len(self.folders[split]), shuffle=shuffle, seed=seed, rank=rank,
                               world_size=world_size)
        batches = DataLoader(self.folders[split], batch_size=batch_size, sampler=sampler,
                             num_workers=self.num_workers, pin_memory=device.type == "cuda",
                             drop_last=drop_last, persistent_workers=self.num_workers > 0)
        transform = BatchTransform(self.mean, self.std, self.augmentation, device)
        return FolderLoader(batches, sampler, transform, device,
                            augment=augment and self.augmentation.active)


def hold_in_memory(in_memory: bool | str, count: int, image_size: int,
                   budget_gb: float) -> tuple[bool, str]:
    """Whether to decode ``count`` images into memory, and if not, why (for error messages)."""
    if not (isinstance(in_memory, bool) or in_memory == "auto"):
        raise ConfigError(f"imagefolder.in_memory = {in_memory!r} must be 'auto', True or False.")
    if isinstance(budget_gb, bool) or not isinstance(budget_gb, (int, float)) or budget_gb < 0:
        raise ConfigError(f"imagefolder.memory_budget_gb = {budget_gb!r} must be a number of "
                          f"gigabytes, at least 0.")
    if in_memory is False:
        return False, "imagefolder.in_memory = False"
    needed_gb = count * 3 * image_size * image_size / 2**30
    if needed_gb <= budget_gb:
        return True, ""
    over = (f"its {count:,} images decode to {needed_gb:.2f} GB, over "
            f"imagefolder.memory_budget_gb = {budget_gb:g}")
    if in_memory is True:
        raise ConfigError(f"imagefolder.in_memory = True, but {over}; raise the budget, or set "
                          f"in_memory = 'auto' to stream it from disk.")
    return False, over
