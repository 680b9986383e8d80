"""The live state of a run that lifecycle hooks receive."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # pragma: no cover
    from fp.config.settings import Settings
    from fp.data.dataset import Dataset, Loader
    from fp.manager import Manager
    from fp.measure import Measure
    from fp.scoring import ScoreContext


def layer_tag(weight_name: str, quantity: str) -> str:
    """``layer/<layer>/<quantity>``: the logged name of a per-layer scalar of a prunable weight."""
    return f"layer/{weight_name.removesuffix('.weight')}/{quantity}"


@dataclass
class PruneEvent:
    """One prune event as plugins see it.

    Filled in stages: ``index``, ``step``, ``epoch``, ``target`` and ``ctx`` before scoring;
    ``scores`` after the measure (and the ``score`` hook); ``removed``, ``widths_before``,
    ``widths_after`` and ``sparsity`` after the surgery.
    """

    index: int                      # 1-based count of prune events in this run
    step: int                       # global optimizer steps done when it happens
    epoch: int                      # epochs completed when it happens
    target: float                   # cumulative fraction of the dense model removed afterwards
    granularity: str                # "filter" | "weight"
    ctx: "ScoreContext | None" = None
    scores: dict[str, torch.Tensor] = field(default_factory=dict)
    removed: dict[str, torch.Tensor] = field(default_factory=dict)
    widths_before: dict[str, int] = field(default_factory=dict)
    widths_after: dict[str, int] = field(default_factory=dict)
    sparsity: float | None = None   # weight granularity: fraction of prunable weights masked
    info: dict[str, Any] = field(default_factory=dict)  # free space for plugins


@dataclass
class Run:
    """What a plugin can read (and, with care, change) during a run.

    ``eval_set`` is the fixed evaluation set V (``data.eval_samples`` > 0, else empty): batches of
    at most 512 class-balanced training images as ``(inputs, targets)``, normalised, un-augmented
    and already on ``device``, the same on every rank, for every measure and on resume. Training
    uses them like every training image; prune events never score on them. Read it, never change
    it: it is what a run's losses are comparable on (``fp.data.holdout``).
    """

    out_dir: Path
    manager: "Manager"
    model: torch.nn.Module
    dataset: "Dataset"
    train_loader: "Loader"
    test_loader: "Loader"
    optimizer: torch.optim.Optimizer
    measure: "Measure"
    device: torch.device
    config: dict[str, Any]            # the resolved settings as plain dicts (train, prune, ...)
    operative_config: str = ""         # gin's operative config text
    epoch: int = 0                     # epochs completed
    step: int = 0                      # optimizer steps completed
    rank: int = 0
    world_size: int = 1
    resumed: bool = False
    dense: dict[str, Any] = field(default_factory=dict)   # params, flops, filters of the dense model
    masks: dict[str, torch.Tensor] = field(default_factory=dict)  # weight granularity
    state: dict[str, Any] = field(default_factory=dict)   # plugin state saved in checkpoints
    settings: "Settings | None" = None  # the same settings, typed (what the engine reads)
    eval_set: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # V, on device

    @property
    def is_main(self) -> bool:
        """True on the process that writes logs and checkpoints (rank 0)."""
        return self.rank == 0

    def scoring_batches(self, index: int, needs_data: bool | None = None) -> list:
        """The scoring batches of prune event ``index``, drawn by the engine's rule (docs:
        ``prune.samples``, ``prune.balanced``); ``needs_data`` False gives one example, None
        asks the run's measure. The same batches the event itself scores on."""
        draw = self.state.get("_scoring_batches")
        if draw is None:
            raise RuntimeError("this Run was not built by the engine; it draws no scoring batches.")
        return draw(self, index, needs_data)

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        """Publish scalars (tag -> value) at global optimizer step ``step`` to the loggers, through
        the ``log_scalars`` hook; TensorBoard writes each as a tag."""
        self.manager.call("log_scalars", run=self, scalars=scalars, step=step)

    def log(self, record: dict[str, Any]) -> None:
        """Append one event to ``metrics.jsonl`` (rank 0 only); set by the engine."""
        writer = self.state.get("_metrics_writer")
        if writer is not None and self.is_main:
            writer(record)
