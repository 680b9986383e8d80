"""Class-balanced scoring samples: exactly ``samples // classes`` images of every class, the draw
the paper's seed code (like the GraSP authors' code) makes for its Hessian-gradient measures.

The draw is generic over any dataset: it walks a seeded, shuffled loader over the whole training
split and keeps each image while its class's quota is still open, so the images kept are the
first ``per_class`` of each class in that seeded order (independent of the loader's batch size
and of the number of ranks). The remainder ``samples mod classes`` is dropped, as the seed drops
it; a class with fewer images than its quota is a ConfigError naming ``prune.samples``. Under
torch.distributed every rank makes the same draw and keeps every ``world_size``-th image from its
rank on, so the shares are disjoint and together hold exactly ``per_class`` of every class.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from fp.errors import ConfigError, DataError

Batch = tuple[Tensor, Tensor]


def per_class_quota(samples: int, num_classes: int, world_size: int = 1) -> int:
    """``samples // num_classes``: the images of each class a balanced draw of ``samples`` takes."""
    quota = samples // num_classes
    if quota < 1:
        raise ConfigError(f"prune.samples = {samples} is fewer than the dataset's {num_classes} "
                          f"classes, and a balanced draw needs an image of each.")
    if quota * num_classes < world_size:
        raise ConfigError(f"prune.samples = {samples} gives a balanced draw of "
                          f"{quota * num_classes} images, fewer than the {world_size} ranks "
                          f"sharing it.")
    return quota


def draw_balanced(loader: Iterable[Batch], num_classes: int,
                  per_class: int) -> tuple[Tensor, Tensor]:
    """The first ``per_class`` images of every class in ``loader``'s order, in that order:
    (inputs, targets). Stops reading as soon as every quota is filled."""
    kept_x, kept_y, have = [], [], None
    for x, y in loader:
        if have is None:
            have = torch.zeros(num_classes, dtype=torch.long, device=y.device)
        if y.numel() and not 0 <= int(y.min()) <= int(y.max()) < num_classes:
            raise DataError(f"a training target lies outside the dataset's {num_classes} "
                            f"classes 0..{num_classes - 1}.")
        onehot = F.one_hot(y, num_classes)
        within = (onehot.cumsum(0) * onehot).sum(1)  # 1-based place of each image in its class
        take = have[y] + within <= per_class
        kept_x.append(x[take])
        kept_y.append(y[take])
        have += torch.bincount(y[take], minlength=num_classes)
        if bool((have == per_class).all()):
            return torch.cat(kept_x), torch.cat(kept_y)
    short = 0 if have is None else int(torch.argmin(have))
    found = 0 if have is None else int(have[short])
    raise ConfigError(f"a balanced draw of prune.samples asks {per_class} images of every "
                      f"class, but the training split has only {found} of class {short}.")


def rank_share(x: Tensor, y: Tensor, batch_size: int, rank: int = 0,
               world_size: int = 1) -> list[Batch]:
    """Rank ``rank``'s images of a draw (every ``world_size``-th from the ``rank``-th), in
    batches of ``batch_size`` (the last one short if need be)."""
    x, y = x[rank::world_size], y[rank::world_size]
    return list(zip(x.split(batch_size), y.split(batch_size)))


def class_counts(y: Tensor, num_classes: int) -> list[int]:
    """Images per class among targets ``y``."""
    return torch.bincount(y, minlength=num_classes).tolist()
