"""Building an experiment: resolved settings in, a live experiment (``Setup``: the model, data,
measure, schedule's plan, optimizer, the ``Run`` plugins see, and the bookkeeping its checkpoint
carries) out, fresh or continued from its last checkpoint."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from fp import config, precision, pruning
from fp import device as devices
from fp.config.settings import Settings
from fp.data.holdout import hold_out
from fp.data.subsets import apply_subsets
from fp.engine import checkpoint, optim, rundir
from fp.engine.checkpoint import Rewind
from fp.engine.compiler import Compiler
from fp.engine.loop import EpochProgress, make_forward
from fp.engine.prune_event import scoring_batches
from fp.engine.summary import structure_stats
from fp.errors import ConfigError
from fp.manager import Manager
from fp.run import Run
from fp.schedule import PruneStep


@dataclass
class Setup:
    """A built experiment: its settings, the ``Run``, the schedule's plan, and the bookkeeping the
    checkpoint carries (``fp.engine.checkpoint``)."""

    settings: Settings
    run: Run
    plan: list[PruneStep]
    total_epochs: int
    cycle_epochs: int
    example_inputs: torch.Tensor
    metrics_log: rundir.MetricsLog
    rewind: Rewind = field(default_factory=Rewind)
    event_index: int = 0
    elapsed: float = 0.0
    best: float = 0.0
    last_metrics: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    progress: EpochProgress = field(default_factory=EpochProgress)  # of the epoch under way
    _stats: dict[str, Any] = field(default_factory=dict)
    forward: Callable = None  # type: ignore[assignment]  # what a step calls (make_forward)
    compiler: Compiler | None = None  # experiment.compile's, made when the run is built

    def __post_init__(self) -> None:
        check_keep_epochs(self.settings.experiment.keep_epochs, self.total_epochs)

    def stats(self, run: Run) -> dict[str, Any]:
        """The model's size (``summary.structure_stats``), counted once per model."""
        if not self._stats:
            self._stats = structure_stats(run.model, self.example_inputs, run.dense)
        return dict(self._stats)

    def write_operative_config(self, run: Run) -> None:
        if run.is_main:
            run.operative_config = config.operative_text()
            rundir.write_text(run.out_dir / "operative_config.gin", run.operative_config)

    def after_surgery(self, run: Run) -> None:
        """The model changed: count it again, wrap (and compile) it again."""
        self._stats = {}
        self.forward = make_forward(run, self.compiler)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def check_keep_epochs(keep: tuple[int, ...], total_epochs: int) -> None:
    """``experiment.keep_epochs`` names epochs the run completes: whole numbers 1..total_epochs."""
    if not all(isinstance(e, int) and not isinstance(e, bool) and 1 <= e <= total_epochs
               for e in keep):
        raise ConfigError(f"experiment.keep_epochs = {tuple(keep)!r} must name epochs the run "
                          f"completes, whole numbers from 1 to {total_epochs}.")


def build_setup(settings: Settings, manager: Manager, out_dir: Path, rank: int = 0,
                world_size: int = 1) -> Setup:
    st = settings
    # first: a checkpoint this flowprune cannot continue is refused before anything is written;
    # rank 0 decides for every rank whether the run resumes
    ckpt = checkpoint.load_on_ranks(out_dir, rank, world_size)
    seed_everything(st.experiment.seed)
    device = devices.resolve(st.experiment.device, what="experiment.device =")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    precision.set_tf32(st.experiment.tf32)  # training's; scoring is always full fp32
    regs = manager.registries
    # the same seeded per-class subset on every rank, and again on resume
    dataset = apply_subsets(regs["datasets"].build(st.data.dataset), st.data, st.experiment.seed)
    # V: seeded from experiment.seed alone, so the same on every rank, measure and resume
    held = hold_out(dataset, st.data.eval_samples, st.experiment.seed, device)
    model = pruning.build_model(st.model.architecture, num_classes=dataset.num_classes,
                                in_channels=dataset.in_channels,
                                init=st.model.init).to(device)
    if st.experiment.channels_last:
        model = model.to(memory_format=torch.channels_last)
    example_inputs = torch.zeros(1, dataset.in_channels, *dataset.image_size, device=device)
    dense = pruning.dense_stats(model, example_inputs)  # what targets are fractions of
    measure = regs["measures"].build(st.prune.measure)
    schedule = regs["schedules"].build(st.prune.schedule)
    # train.batch_size is the global batch: each of the world_size ranks takes its share
    per_rank = max(1, st.train.batch_size // world_size)
    train_loader = dataset.loader("train", per_rank, shuffle=True, augment=True,
                                  device=device, seed=st.experiment.seed, rank=rank,
                                  world_size=world_size)
    test_loader = dataset.loader("test", st.train.test_batch_size, device=device, rank=rank,
                                 world_size=world_size)
    plan = (schedule.plan(st.prune.target, st.prune.rounds, st.train.epochs, len(train_loader))
            if st.prune.target > 0 else [])
    metrics_log = rundir.MetricsLog(out_dir / "metrics.jsonl")
    run = Run(out_dir=out_dir, manager=manager, model=model, dataset=dataset,
              train_loader=train_loader, test_loader=test_loader,
              optimizer=optim.make_optimizer(model, st.train), measure=measure, device=device,
              settings=st, rank=rank, world_size=world_size, dense=dense, eval_set=held.batches,
              metrics_writer=metrics_log if rank == 0 else None, scoring_draw=scoring_batches)
    rewind_epoch = getattr(schedule, "rewind_epoch", 0) if any(p.rewind for p in plan) else None
    setup = Setup(settings=st, run=run, plan=plan,
                  total_epochs=schedule.total_epochs(st.train.epochs, st.prune.rounds),
                  cycle_epochs=st.train.epochs, example_inputs=example_inputs,
                  metrics_log=metrics_log, rewind=Rewind(epoch=rewind_epoch))
    if run.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        setup.write_operative_config(run)
        rundir.write_text(out_dir / "config.gin", config.config_text())
    if held.scoring is not None:  # prune events score on the training split without V
        run.scoring_dataset = held.scoring
    if ckpt is not None:
        checkpoint.restore(setup, run, ckpt)
    else:
        setup.rewind.take(run.model, run.epoch)  # imp.rewind_epoch = 0: the initialisation
        checkpoint.save(setup, run)
    if st.experiment.compile:  # after the restore: it continues a resumed run's counts
        setup.compiler = Compiler(run)
    setup.forward = make_forward(run, setup.compiler)
    return setup
