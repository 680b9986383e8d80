"""``fp run``: build an experiment from gin, train it with its prune events, resume it."""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from fp import checkpoint, config, optim, pruning, rundir
from fp.build import build_setup
from fp.distributed import broadcast_buffers
from fp.errors import ConfigError, Interrupted
from fp.loop import EpochProgress, evaluate_split, train_epoch
from fp.manager import Manager, make_manager
from fp.prune_event import hvp_record, prune_now
from fp.run import Run
from fp.runlock import RunLock
from fp.schedule import PruneStep
from fp.progress import Progress


@dataclass
class Outcome:
    """What ``fp run`` reports: the summary, and whether it resumed or found the run finished."""

    out_dir: Path
    summary: dict[str, Any]
    resumed: bool = False
    already_finished: bool = False
    notes: list[str] = field(default_factory=list)
    model: Any = None  # the final (pruned) model, for callers in the same process


def run(files: Sequence[str], bindings: Sequence[str] = (), *, out: str | Path | None = None,
        device: str | None = None, force: bool = False, manager: Manager | None = None,
        rank: int = 0, world_size: int = 1, quiet: bool = False) -> Outcome:
    """Run (or resume, or report finished) the experiment declared by ``files`` + ``bindings``."""
    manager = manager or make_manager()
    manager.require_healthy()
    settings = config.parse(files, bindings, manager)
    if device:
        settings.experiment.device = device
    out_dir = Path(out) if out else default_out_dir(files, config.config_text())
    check_out_dir(out_dir, config.config_text(), force)
    finished = finished_outcome(out_dir, force)  # before the lock: a finished run is not touched
    if finished:
        return finished
    with RunLock(out_dir) if rank == 0 else contextlib.nullcontext():  # rank 0 locks for all
        finished = finished_outcome(out_dir, force) if rank == 0 else None  # done since the check
        if finished:
            return finished
        setup = build_setup(settings, manager, out_dir, rank, world_size)
        return Trainer(setup, quiet=quiet).fit()


def finished_outcome(out_dir: Path, force: bool) -> Outcome | None:
    """The outcome of a run directory that holds a finished run (unless ``force``)."""
    if (out_dir / "summary.json").exists() and not force:
        return Outcome(out_dir, rundir_summary(out_dir), already_finished=True)
    return None


def default_out_dir(files: Sequence[str], text: str) -> Path:
    import hashlib

    stem = Path(files[-1]).stem if files else "run"
    return Path("runs") / f"{stem}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def check_out_dir(out_dir: Path, text: str, force: bool) -> None:
    """Refuse to mix a run directory with a different experiment unless forced."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} exists and is not a directory.")
    saved = out_dir / "config.gin"
    if saved.exists() and not force and saved.read_text() != text:
        raise ConfigError(f"{out_dir} holds a run with a different config; use another --out, or "
                          f"--force to continue it with the new config.")


def rundir_summary(out_dir: Path) -> dict[str, Any]:
    import json

    return json.loads((out_dir / "summary.json").read_text())


class Trainer:
    """Drives epochs, prune events, checkpoints and hooks for one built experiment."""

    def __init__(self, setup: "checkpoint.Setup", quiet: bool = False) -> None:
        self.setup = setup
        self.run: Run = setup.run
        self.quiet = quiet
        self.events: dict[int, PruneStep] = {p.step: p for p in setup.plan}

    def fit(self) -> Outcome:
        run, s = self.run, self.setup
        run.manager.call("run_start", run=run)
        s.write_operative_config(run)  # again: plugins configure themselves in run_start
        if run.step == 0 and 0 in self.events and s.event_index == 0:
            self._prune(self.events[0])
            s.save(run)
        self.start = time.perf_counter() - s.elapsed
        with Progress(s.total_epochs, len(run.train_loader), enabled=run.is_main and not self.quiet,
                      batch_size=s.settings.train.batch_size) as bar, \
                StopOnSignal() as self.stop:
            bar.skip(run.step)
            while run.epoch < s.total_epochs:
                metrics = self._epoch(bar)
                s.elapsed = time.perf_counter() - self.start
                self._end_epoch(metrics, bar)
                self._stop_if_asked()
        summary = s.finish(run, s.elapsed)
        run.manager.call("run_end", run=run, summary=summary)
        return Outcome(run.out_dir, summary, resumed=run.resumed, notes=s.notes, model=run.model)

    def _epoch(self, bar) -> dict[str, float]:
        run, s = self.run, self.setup
        cycle_epoch = run.epoch - run.state.get("cycle_start", 0)
        optim.set_lr(run.optimizer, optim.lr_at(s.settings.train, cycle_epoch, s.cycle_epochs))
        run.train_loader.set_epoch(run.epoch)
        # a prune event inside the epoch replaces the model, so look the forward up on every step
        metrics = train_epoch(run, lambda x: s.forward(x), on_step=lambda: self._after_step(bar),
                              progress=s.progress)
        if not all(map(_finite, metrics.values())):
            raise s.diverged(run)
        run.epoch += 1
        s.progress = EpochProgress()
        broadcast_buffers(run.model, run.world_size)
        metrics.update(evaluate_split(run))
        metrics["lr"] = run.optimizer.param_groups[0]["lr"]
        return metrics

    def _after_step(self, bar) -> None:
        run = self.run
        if run.masks:
            pruning.apply_masks(run.model, run.masks, run.optimizer)
        bar.advance_step()
        planned = self.events.get(run.step)
        if planned is not None and run.step > 0:
            if not torch.isfinite(self.setup.progress.loss_sum):  # never prune a diverged model
                raise self.setup.diverged(run)
            self._prune(planned)
            self.setup.elapsed = time.perf_counter() - self.start
            self.setup.save(run)
        self._stop_if_asked()

    def _stop_if_asked(self) -> None:
        if self.stop.signum is None:
            return
        self.setup.elapsed = time.perf_counter() - self.start
        self.setup.save(self.run)
        name = signal.Signals(self.stop.signum).name
        raise Interrupted(f"stopped by {name} at step {self.run.step}; the checkpoint in "
                          f"{self.run.out_dir / rundir.CHECKPOINTS} is up to date, run the same "
                          f"command again to resume.", self.stop.signum)

    def _prune(self, planned: PruneStep) -> None:
        run, s = self.run, self.setup
        s.event_index += 1
        event = prune_now(run, planned, s.event_index, s.example_inputs)
        s.after_surgery(run)  # first: the record below must count the pruned model, not a cache
        record = s.stats(run)
        record.update(event="prune", index=event.index, step=run.step, epoch=run.epoch,
                      target=event.target, sparsity=event.sparsity,
                      widths=event.widths_after or None, widths_before=event.widths_before or None)
        record.update(hvp_record(event))
        run.log(record)

    def _end_epoch(self, metrics: dict[str, float], bar) -> None:
        run, s = self.run, self.setup
        metrics.update(s.stats(run))
        s.best = max(s.best, metrics["test_acc"])
        metrics["best_test_acc"] = s.best
        run.log({"event": "epoch", "epoch": run.epoch, "step": run.step, **metrics})
        run.manager.call("after_epoch", run=run, epoch=run.epoch, metrics=metrics)
        s.last_metrics = metrics
        s.save(run)
        bar.end_epoch(run.epoch, metrics)


class StopOnSignal:
    """Turn SIGINT/SIGTERM into a request the trainer honours at the next step boundary, so the
    checkpoint it writes is consistent."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, object] = {}

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._request)
        return self

    def _request(self, signum, frame) -> None:
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _finite(value: float) -> bool:
    return value == value and value not in (float("inf"), float("-inf"))
