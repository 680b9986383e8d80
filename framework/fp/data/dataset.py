"""The dataset contract. Concrete datasets are plugins (``fp_builtins.datasets``)."""
from __future__ import annotations

from typing import ClassVar, Iterator, Protocol

import torch


class Loader(Protocol):
    """Batches of ``(inputs, targets)``: float inputs normalised and on the training device, int64
    targets. ``len()`` is the number of batches per epoch; ``set_epoch`` reseeds the shuffle so that
    epoch ``e`` is the same whatever happened before (exact resume, identical DDP shards)."""

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...
    def __len__(self) -> int: ...
    def set_epoch(self, epoch: int) -> None: ...


class Dataset:
    """A classification dataset with ``train`` and ``test`` splits.

    Subclasses set ``name`` and, once constructed, ``num_classes``, ``in_channels`` and
    ``image_size`` (H, W). Constructor arguments (root, download, ...) are gin-bindable.
    """

    name: ClassVar[str] = ""
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]

    def loader(self, split: str, batch_size: int, *, shuffle: bool = False, augment: bool = False,
               device: torch.device | str = "cpu", seed: int = 0, rank: int = 0,
               world_size: int = 1, drop_last: bool = False) -> Loader:
        """A loader over ``split`` ("train" or "test"); with ``world_size > 1`` each rank gets a
        disjoint shard of equal length."""
        raise NotImplementedError(f"dataset {self.name!r} does not implement loader()")

    def __len__(self) -> int:  # number of training examples
        raise NotImplementedError
