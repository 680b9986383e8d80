"""Building an experiment, fresh or from its last checkpoint, and saving everything needed to
continue it exactly: weights and pruned shapes, optimizer, RNG, schedule position, plugin state,
and the clock."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from fp import config, pruning
from fp.config.settings import Settings
from fp.engine import optim, rundir
from fp.engine.latency_event import summary_fields
from fp.engine.loop import EpochProgress
from fp.errors import ConfigError, FpError
from fp.run import Run
from fp.schedule import PruneStep

VERSION = 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Setup:
    """A built experiment plus the bookkeeping the checkpoint carries."""

    settings: Settings
    run: Run
    plan: list[PruneStep]
    total_epochs: int
    cycle_epochs: int
    example_inputs: torch.Tensor
    metrics_log: rundir.MetricsLog
    rewind_epoch: int | None = None
    event_index: int = 0
    elapsed: float = 0.0
    best: float = 0.0
    last_metrics: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    progress: EpochProgress = field(default_factory=EpochProgress)  # of the epoch under way
    _stats: dict[str, Any] = field(default_factory=dict)
    forward: Callable[[], Callable] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        check_keep_epochs(self.settings.experiment.keep_epochs, self.total_epochs)

    def stats(self, run: Run) -> dict[str, Any]:
        if not self._stats:
            self._stats = structure_stats(run.model, self.example_inputs, run.dense)
        return dict(self._stats)

    def write_operative_config(self, run: Run) -> None:
        if run.is_main:
            run.operative_config = config.operative_text()
            rundir.write_text(run.out_dir / "operative_config.gin", run.operative_config)

    def after_surgery(self, run: Run) -> None:
        self._stats = {}
        self.forward = make_forward(run)

    def save(self, run: Run) -> None:
        if self.rewind_epoch is not None and "rewind" not in run.state and run.epoch >= self.rewind_epoch:
            run.state["rewind"] = {n: p.detach().clone() for n, p in run.model.named_parameters()}
        if run.is_main:
            rundir.save_checkpoint(run.out_dir, self.state(run))
            at_epoch_end = self.progress.batches == 0  # not a prune event's or a stop's mid-epoch save
            if at_epoch_end and run.epoch in self.settings.experiment.keep_epochs:
                rundir.keep_checkpoint(run.out_dir, run.epoch)

    def state(self, run: Run) -> dict[str, Any]:
        return {
            "version": VERSION,
            "model": pruning.model_state(run.model),
            "optimizer": run.optimizer.state_dict(),
            "masks": run.masks,
            "epoch": run.epoch, "step": run.step, "event_index": self.event_index,
            "progress": self.progress.state(),
            "elapsed": self.elapsed, "best": self.best, "last_metrics": self.last_metrics,
            "plugins": {k: v for k, v in run.state.items() if not k.startswith("_")},
            "rng": rng_state(), "metrics_bytes": self.metrics_log.size(),
        }

    def restore(self, run: Run, ckpt: dict[str, Any]) -> None:
        run.model = pruning.model_from_state(ckpt["model"]).to(run.device)
        run.optimizer = optim.make_optimizer(run.model, self.settings.train)
        run.optimizer.load_state_dict(ckpt["optimizer"])
        run.masks = {k: v.to(run.device) for k, v in ckpt["masks"].items()}
        run.epoch, run.step = ckpt["epoch"], ckpt["step"]
        self.progress = EpochProgress(**ckpt["progress"])
        self.event_index, self.elapsed, self.best = ckpt["event_index"], ckpt["elapsed"], ckpt["best"]
        self.last_metrics = ckpt["last_metrics"]
        run.state.update(ckpt["plugins"])
        set_rng_state(ckpt["rng"])
        self.metrics_log.truncate(ckpt["metrics_bytes"])
        run.resumed = True
        where = f"epoch {run.epoch}" + (f", batch {self.progress.batches} of epoch {run.epoch + 1}"
                                        if self.progress.batches else "")
        self.notes.append(f"resumed from the checkpoint after {where} (step {run.step})")

    def finish(self, run: Run, elapsed: float) -> dict[str, Any]:
        summary = make_summary(self, run, elapsed)
        if run.is_main:
            pruning.save(run.model, run.out_dir / "model.pt", masks=run.masks or None)
            rundir.write_json(run.out_dir / "summary.json", summary)
        return summary

    def diverged(self, run: Run) -> FpError:
        return FpError(f"the training loss became NaN or infinite in epoch {run.epoch + 1}; the last "
                       f"good checkpoint is kept in {run.out_dir / rundir.CHECKPOINTS} (lower "
                       f"train.lr or check the data).")


def check_keep_epochs(keep: tuple[int, ...], total_epochs: int) -> None:
    """``experiment.keep_epochs`` names epochs the run completes: whole numbers 1..total_epochs."""
    if not all(isinstance(e, int) and not isinstance(e, bool) and 1 <= e <= total_epochs
               for e in keep):
        raise ConfigError(f"experiment.keep_epochs = {tuple(keep)!r} must name epochs the run "
                          f"completes, whole numbers from 1 to {total_epochs}.")


def structure_stats(model: torch.nn.Module, example_inputs: torch.Tensor, dense: dict) -> dict[str, Any]:
    params = pruning.count_params(model)
    flops = pruning.count_flops(model, example_inputs)
    filters = pruning.prunable_filters(model)
    return {"params": params, "flops": flops, "filters_kept": filters,
            "params_frac": params / dense["params"], "flops_frac": flops / max(dense["flops"], 1),
            "filters_kept_frac": filters / dense["filters"]}


def make_forward(run: Run) -> Callable:
    """The callable a training step uses: the model itself, compiled or DDP-wrapped as asked."""
    model = run.model
    if run.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model)
    if run.settings.experiment.compile:
        model = torch.compile(model)
    return model


def rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(internal), gauss], "torch": torch.get_rng_state(),
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def make_summary(s: Setup, run: Run, elapsed: float) -> dict[str, Any]:
    st = s.settings
    stats = s.stats(run)
    last = s.last_metrics
    return {
        "test_acc": last.get("test_acc"), "best_test_acc": s.best, "test_loss": last.get("test_loss"),
        "train_acc": last.get("train_acc"), "train_loss": last.get("train_loss"),
        "params": stats["params"], "dense_params": run.dense["params"],
        "flops": stats["flops"], "dense_flops": run.dense["flops"],
        "filters_kept": stats["filters_kept"], "dense_filters": run.dense["filters"],
        "sparsity": pruning.sparsity(run.model, run.masks) if run.masks else 0.0,
        "epochs": run.epoch, "steps": run.step, "wall_time_s": round(elapsed, 3),
        "measure": st.prune.measure, "architecture": st.model.architecture,
        "dataset": st.data.dataset, "target": st.prune.target, "target_type": st.prune.target_type,
        "granularity": st.prune.granularity, "schedule": st.prune.schedule, "rounds": st.prune.rounds,
        "prune_events": s.event_index, "seed": st.experiment.seed, "world_size": run.world_size,
        "device": str(run.device), "name": st.experiment.name, **summary_fields(run),
    }

