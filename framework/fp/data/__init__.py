"""The fast data path: uint8 images kept on the training device, augmented a whole batch at a time.

Every epoch's order and augmentation are a pure function of ``(seed, epoch)`` (and the rank for
augmentation), so a resumed run and every DDP rank see exactly what an uninterrupted run would.
The parts live in ``crop`` (crop and flip kernels), ``transforms`` (seeded randomness, the batch
transform) and ``loader`` (in-memory datasets and their loader); their names are re-exported here.
``holdout`` holds the fixed evaluation set V (``data.eval_samples``) out of the scoring draws.
"""
from __future__ import annotations

import os
from pathlib import Path

from fp.data.crop import augment_batch, gather_crop, row_crop  # noqa: F401 (re-exported)
from fp.data.loader import (SPLITS, InMemoryDataset, Split, TensorLoader,  # noqa: F401
                            batches_per_epoch, check_loader_args, one_cpu_thread)
from fp.data.transforms import (Augmentation, BatchTransform, augment_params,  # noqa: F401
                                channel_stats, seeded_generator, shard_order)
from fp.data.holdout import (Holdout, evaluation_batches, evaluation_indices,  # noqa: F401
                             hold_out, scoring_dataset, without)


def default_data_root() -> Path:
    """Where datasets are cached: ``$FP_DATA``, else ``~/.cache/flowprune/data``."""
    return Path(os.environ.get("FP_DATA") or Path.home() / ".cache" / "flowprune" / "data")
