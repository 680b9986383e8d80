"""The two image sets of an intervention, both class-balanced training images and disjoint:

- V, the evaluation set every loss, first-order prediction and Θᵀg is measured on: the run's
  own fixed evaluation set (``fp.data.holdout``, ``data.eval_samples``), or, for a run without
  one, the same draw of ``--eval-samples`` images (capped so every class keeps room for S);
- S, the scoring set every measure scores on and ||g_S||² is measured on: ``prune.samples //
  classes`` images of each class drawn as a run's prune event draws a balanced set
  (``fp.engine.prune_event.draw_scoring``: ``fp.scoring.sampling.draw_balanced`` over a seeded,
  shuffled loader, augmented when ``prune.scoring_augment``) from the training images outside V,
  seeded from the run's ``experiment.seed`` and the checkpoint's epoch. The same S for every
  measure.
"""
from __future__ import annotations

import torch
from torch import Tensor

from fp.config.settings import Settings
from fp.data import Holdout, InMemoryDataset, hold_out
from fp.errors import ConfigError, DataError
from fp.scoring import sampling

Batch = tuple[Tensor, Tensor]


def evaluation_set(dataset, settings: Settings, wanted: int, device: torch.device) -> Holdout:
    """V (``data.eval_samples``, else ``wanted`` images capped by the data) and the dataset
    without it, as a run with that ``data.eval_samples`` holds them."""
    size = evaluation_size(dataset, settings.data.eval_samples or wanted, settings.prune.samples)
    return hold_out(dataset, size, settings.experiment.seed, device)


def evaluation_size(dataset, wanted: int, scoring_samples: int) -> int:
    """V's size: ``wanted``, capped so every class keeps room for its share of S."""
    if not (isinstance(dataset, InMemoryDataset) and dataset.in_memory):
        raise ConfigError(f"interventions draw their evaluation and scoring images from the "
                          f"training split held in memory, but dataset {dataset.name!r} streams "
                          f"from disk.")
    classes = dataset.num_classes
    smallest = int(torch.bincount(dataset.splits["train"].labels, minlength=classes).min())
    room = smallest - sampling.per_class_quota(scoring_samples, classes)
    if wanted // classes < 1 or room < 1:
        raise DataError(f"the training split leaves no class-balanced evaluation set: its "
                        f"smallest class has {smallest} images, prune.samples takes "
                        f"{scoring_samples // classes} of each and V asks "
                        f"{wanted // classes} of each.")
    return min(wanted // classes, room) * classes


def scoring_batches(held: Holdout, settings: Settings, epoch: int,
                    device: torch.device) -> list[Batch]:
    """S: the balanced draw of ``draw_scoring`` from the training images outside V
    (``held.scoring``), seeded as that rule seeds event ``index`` (``experiment.seed + 7919
    index``) with the checkpoint's epoch as the index."""
    prune, dataset = settings.prune, held.scoring
    loader = dataset.loader("train", prune.batch_size, shuffle=True,
                            augment=prune.scoring_augment, device=device,
                            seed=settings.experiment.seed + 7919 * epoch)
    x, y = sampling.draw_balanced(loader, dataset.num_classes,
                                  sampling.per_class_quota(prune.samples, dataset.num_classes))
    return sampling.rank_share(x, y, prune.batch_size)
