"""The fixed evaluation set V (``data.eval_samples``): class-balanced training images held out
from every prune event's scoring draw, on which a run measures loss, accuracy and ‖g‖² at epoch
ends and around prune events (claim (i) of Lubana & Dick, ICLR 2021, compares convergence on a
FIXED set, not the running training loss).

V is ``eval_samples // classes`` images of every class of the training split (after
``data.train_per_class``), each class drawn from its own seeded stream (keyed apart from the
subsets' streams, so V is not the start of ``data.train_per_class``'s draw). It depends only on
``experiment.seed`` and the labels: the same for every measure, on every DDP rank and on resume.
Training still uses every training image; only the scoring draws lose V's.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from fp.data.loader import InMemoryDataset, Split
from fp.data.subsets import _check_in_memory  # the one refusal of a streaming dataset
from fp.data.subsets import balanced_indices
from fp.errors import ConfigError

Batch = tuple[torch.Tensor, torch.Tensor]

BINDING = "data.eval_samples"
#: seeded_generator key that sets V's per-class streams apart from data.train_per_class's
EVAL_STREAM = 0xE7A1
#: images per batch of V: one forward and backward pass each at every measurement
EVAL_BATCH = 512


@dataclass
class Holdout:
    """V as a run holds it, and the training data prune events draw their scoring samples from."""

    batches: list[Batch] = field(default_factory=list)  # V, normalised, on the device
    indices: torch.Tensor | None = None                  # V's places in the training split
    scoring: Any = None                                  # the dataset without V (None: the run's)


def evaluation_indices(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Ascending indices of ``per_class`` random examples of every class present in ``labels``,
    each class from its own stream of ``seed``."""
    return balanced_indices(labels, per_class, seed, EVAL_STREAM)


def hold_out(dataset: Any, eval_samples: int, seed: int, device: torch.device) -> Holdout:
    """V of ``eval_samples`` images of ``dataset`` on ``device`` and the dataset without them;
    an empty Holdout (nothing held out, scoring on ``dataset`` itself) for ``eval_samples`` 0."""
    if not eval_samples:
        return Holdout()
    _check_in_memory(BINDING, dataset)
    labels = dataset.splits["train"].labels
    per_class = _per_class(eval_samples, labels, dataset)
    index = evaluation_indices(labels, per_class, seed)
    return Holdout(batches=evaluation_batches(dataset, index, device), indices=index,
                   scoring=without(dataset, index))


def evaluation_batches(dataset: InMemoryDataset, index: torch.Tensor, device: torch.device,
                       batch_size: int = EVAL_BATCH) -> list[Batch]:
    """The training images at ``index`` in that order, un-augmented and normalised as every
    loader's batches are, on ``device``, in batches of at most ``batch_size``."""
    held = _with_train(dataset, Split(dataset.splits["train"].images[index],
                                      dataset.splits["train"].labels[index]))
    return list(held.loader("train", batch_size, device=device))


def without(dataset: InMemoryDataset, index: torch.Tensor) -> InMemoryDataset:
    """A shallow copy of ``dataset`` whose training split lacks the examples at ``index`` (the
    rest in their order); the test split and everything else are shared."""
    keep = torch.ones(len(dataset.splits["train"].labels), dtype=torch.bool)
    keep[index] = False
    view = _with_train(dataset, dataset.splits["train"])
    view.keep("train", keep.nonzero().view(-1))
    return view


def scoring_dataset(run: Any) -> Any:
    """The dataset a run's prune events draw scoring samples from: its dataset without V. A run
    stand-in without ``scoring_dataset`` (built outside the engine) scores on its dataset."""
    scoring = getattr(run, "scoring_dataset", None)
    return run.dataset if scoring is None else scoring


def _with_train(dataset: InMemoryDataset, train: Split) -> InMemoryDataset:
    view = copy.copy(dataset)
    view.splits = {**dataset.splits, "train": train}
    view._on_device = {k: v for k, v in dataset._on_device.items() if k[0] != "train"}
    return view


def _per_class(eval_samples: int, labels: torch.Tensor, dataset: Any) -> int:
    """``eval_samples // classes``, refused when 0 or when it would leave a class of the training
    split nothing for prune events to score on."""
    classes = dataset.num_classes
    per_class = eval_samples // classes
    if per_class < 1:
        raise ConfigError(f"{BINDING} = {eval_samples} is fewer than the {classes} classes of "
                          f"dataset {dataset.name!r}, and the class-balanced evaluation set "
                          f"needs an image of each.")
    sizes = torch.bincount(labels, minlength=classes)
    smallest = int(sizes.argmin())
    have = int(sizes[smallest])
    if per_class < have:
        return per_class
    names = getattr(dataset, "classes", None)
    label = f"{names[smallest]!r}" if names is not None and smallest < len(names) else smallest
    raise ConfigError(f"{BINDING} = {eval_samples} asks {per_class} training images of every "
                      f"class, but class {label} of dataset {dataset.name!r} has only {have} "
                      f"and prune events need at least one left to score on; use at most "
                      f"{max(have - 1, 0) * classes}.")
