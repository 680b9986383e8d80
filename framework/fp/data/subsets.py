"""Class-balanced subsets of an in-memory dataset (``data.train_per_class`` and
``data.test_per_class``): the same number of images of every class, drawn from ``experiment.seed``.

Every class is drawn from its own seeded stream, so the images kept of one class do not depend on
how many images the other classes have, and the same seed keeps the same images on every machine,
every DDP rank and every rebuild of a run's dataset (resume, ``fp eval``).
"""
from __future__ import annotations

from typing import Any

import torch

from fp.data.loader import InMemoryDataset
from fp.data.transforms import seeded_generator
from fp.errors import ConfigError

#: seeded_generator keys that set the subset streams apart from the shuffle and augmentation ones
_SUBSET_STREAM = 0x5B5E7
_SPLIT_STREAM = {"train": 0, "test": 1}


def per_class_indices(labels: torch.Tensor, count: int, *, seed: int, split: str) -> torch.Tensor:
    """Ascending indices of ``count`` random examples of every class present in ``labels``."""
    return balanced_indices(labels, count, seed, _SUBSET_STREAM, _SPLIT_STREAM[split])


def balanced_indices(labels: torch.Tensor, count: int, *keys: int) -> torch.Tensor:
    """Ascending indices of ``count`` random examples of every class present in ``labels``, each
    class drawn from its own stream ``seeded_generator(*keys, class)``."""
    chosen = []
    for cls in torch.unique(labels).tolist():
        members = (labels == cls).nonzero().view(-1)
        gen = seeded_generator(*keys, cls)
        chosen.append(members[torch.randperm(len(members), generator=gen)[:count]])
    return torch.cat(chosen).sort().values


def apply_subsets(dataset: Any, data: Any, seed: int) -> Any:
    """Cut ``dataset`` down to the per-class counts of the ``data`` settings (``None``: all)."""
    for split in ("train", "test"):
        count = getattr(data, f"{split}_per_class")
        if count is None:
            continue
        binding = f"data.{split}_per_class"
        _check_count(binding, count)
        _check_in_memory(binding, dataset)
        labels = dataset.splits[split].labels
        _check_enough(binding, count, labels, dataset, split)
        dataset.keep(split, per_class_indices(labels, count, seed=seed, split=split))
    return dataset


def _check_count(binding: str, count: Any) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"{binding} = {count!r} must be a positive integer (or None for all).")


def _check_in_memory(binding: str, dataset: Any) -> None:
    if isinstance(dataset, InMemoryDataset) and dataset.in_memory:
        return
    why = getattr(dataset, "streaming_reason", "")
    raise ConfigError(f"{binding} needs an in-memory dataset (an fp.data.InMemoryDataset holding "
                      f"its images), but dataset {dataset.name!r} streams from disk"
                      f"{f' ({why})' if why else ''}.")


def _check_enough(binding: str, count: int, labels: torch.Tensor, dataset: Any,
                  split: str) -> None:
    classes, sizes = torch.unique(labels, return_counts=True)
    smallest = int(sizes.argmin())
    if count <= int(sizes[smallest]):
        return
    names = getattr(dataset, "classes", None)
    cls = int(classes[smallest])
    label = f"{names[cls]!r}" if names is not None and cls < len(names) else str(cls)
    raise ConfigError(f"{binding} = {count} is more than the {int(sizes[smallest])} images of "
                      f"class {label} in the {split} split of dataset {dataset.name!r}; use at "
                      f"most {int(sizes[smallest])}.")
