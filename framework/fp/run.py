"""The live state of a run that lifecycle hooks receive."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

if TYPE_CHECKING:  # pragma: no cover
    from fp.config.settings import Settings
    from fp.data.dataset import Dataset, Loader
    from fp.manager import Manager
    from fp.measure import Measure
    from fp.scoring import ScoreContext


#: the model attribute that holds its weight masks (``fp.pruning.masks``, saved by ``fp.save``)
WEIGHT_MASKS = "fp_masks"


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

    ``settings`` are the resolved settings, typed (``run.settings.train.lr``); ``config`` gives
    the same as plain dicts (``run.config["train"]["lr"]``). ``masks`` are the model's weight
    masks (weight granularity): they live on the model, ``model.fp_masks``, as after ``fp.prune``;
    assign a new dict rather than changing it in place.

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
    settings: "Settings"               # the resolved settings, typed (what the engine reads)
    operative_config: str = ""         # gin's operative config text
    epoch: int = 0                     # epochs completed
    step: int = 0                      # optimizer steps completed
    rank: int = 0
    world_size: int = 1
    resumed: bool = False
    dense: dict[str, Any] = field(default_factory=dict)   # params, flops, filters of the dense model
    state: dict[str, Any] = field(default_factory=dict)   # plugin state saved in checkpoints
    eval_set: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # V, on device
    #: appends one record to metrics.jsonl; the engine sets it on rank 0 (None: nothing is written)
    metrics_writer: Callable[[dict[str, Any]], None] | None = None
    #: the engine's draw of a prune event's scoring batches: (run, index, needs_data) -> batches
    scoring_draw: Callable[["Run", int, bool | None], list] | None = None
    #: what prune events draw scoring samples from when V is held out (the training split without
    #: V; per process, not checkpointed); None: ``dataset``
    scoring_dataset: Any = None

    @property
    def config(self) -> dict[str, Any]:
        """The resolved settings as plain dicts (train, prune, data, model, experiment), made
        from ``settings``, their one source."""
        return self.settings.as_dict()

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """The model's weight masks (parameter name -> bool, True = kept); {} if none."""
        return getattr(self.model, WEIGHT_MASKS, None) or {}

    @masks.setter
    def masks(self, masks: dict[str, torch.Tensor]) -> None:
        if masks:
            setattr(self.model, WEIGHT_MASKS, masks)
        elif hasattr(self.model, WEIGHT_MASKS):
            delattr(self.model, WEIGHT_MASKS)

    @property
    def is_main(self) -> bool:
        """True on the process that writes logs and checkpoints (rank 0)."""
        return self.rank == 0

    def scoring_batches(self, index: int, needs_data: bool | None = None) -> list:
        """The scoring batches of prune event ``index``, drawn by the engine's rule (docs:
        ``prune.samples``, ``prune.balanced``); ``needs_data`` False gives one example, None
        asks the run's measure. The same batches the event itself scores on."""
        if self.scoring_draw is None:
            raise RuntimeError("this Run was not built by the engine; it draws no scoring batches.")
        return self.scoring_draw(self, index, needs_data)

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        """Publish scalars (tag -> value) at global optimizer step ``step`` to the loggers, through
        the ``log_scalars`` hook; TensorBoard writes each as a tag."""
        self.manager.call("log_scalars", run=self, scalars=scalars, step=step)

    def log(self, record: dict[str, Any]) -> None:
        """Append one event to ``metrics.jsonl`` (rank 0 only); set by the engine."""
        if self.metrics_writer is not None and self.is_main:
            self.metrics_writer(record)
