"""The training of one built experiment: epochs, prune events at their steps, checkpoints at
every boundary, hooks, a clean stop on SIGINT/SIGTERM, and at the end model.pt and summary.json."""
from __future__ import annotations

import signal
import threading
import time
from typing import Any

import torch

from fp import pruning
from fp.engine import checkpoint, optim, rundir
from fp.engine.build import Setup
from fp.engine.distributed import broadcast_buffers
from fp.engine.loop import EpochProgress, evaluate_split, train_epoch
from fp.engine.outcome import Outcome
from fp.engine.progress import Progress
from fp.engine.prune_event import prune_now, prune_record
from fp.engine.summary import make_summary
from fp.errors import FpError, Interrupted
from fp.run import Run
from fp.schedule import PruneStep


class Trainer:
    """Drives epochs, prune events, checkpoints and hooks for one built experiment."""

    def __init__(self, setup: Setup, quiet: bool = False) -> None:
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
            checkpoint.save(s, run)
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
        summary = self._finish()
        run.manager.call("run_end", run=run, summary=summary)
        return Outcome(run.out_dir, summary, resumed=run.resumed, notes=s.notes, model=run.model)

    def _epoch(self, bar) -> dict[str, float]:
        run, s = self.run, self.setup
        cycle_epoch = run.epoch - s.rewind.cycle_start
        optim.set_lr(run.optimizer, optim.lr_at(s.settings.train, cycle_epoch, s.cycle_epochs))
        run.train_loader.set_epoch(run.epoch)
        # a prune event inside the epoch replaces the model, so look the forward up on every step
        metrics = train_epoch(run, lambda x: s.forward(x), on_step=lambda: self._after_step(bar),
                              progress=s.progress)
        if not all(map(_finite, metrics.values())):
            raise diverged(run)
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
        pruning.apply_filter_masks(run.model, run.optimizer)  # prune.residual = "masked"
        bar.advance_step()
        planned = self.events.get(run.step)
        if planned is not None and run.step > 0:
            if not torch.isfinite(self.setup.progress.loss_sum):  # never prune a diverged model
                raise diverged(run)
            self._prune(planned)
            self.setup.elapsed = time.perf_counter() - self.start
            checkpoint.save(self.setup, run)
        self._stop_if_asked()

    def _stop_if_asked(self) -> None:
        if self.stop.signum is None:
            return
        self.setup.elapsed = time.perf_counter() - self.start
        checkpoint.save(self.setup, self.run)
        name = signal.Signals(self.stop.signum).name
        raise Interrupted(f"stopped by {name} at step {self.run.step}; the checkpoint in "
                          f"{self.run.out_dir / rundir.CHECKPOINTS} is up to date, run the same "
                          f"command again to resume.", self.stop.signum)

    def _prune(self, planned: PruneStep) -> None:
        run, s = self.run, self.setup
        s.event_index += 1
        event = prune_now(run, planned, s.event_index, s.example_inputs, s.rewind)
        s.after_surgery(run)  # first: the record below must count the pruned model, not a cache
        run.log(prune_record(event, run, s.stats(run)))

    def _end_epoch(self, metrics: dict[str, float], bar) -> None:
        run, s = self.run, self.setup
        metrics.update(s.stats(run))
        if s.compiler is not None:
            metrics["compiled_steps"] = s.compiler.end_epoch(run.epoch)
        s.best = max(s.best, metrics["test_acc"])
        metrics["best_test_acc"] = s.best
        run.log({"event": "epoch", "epoch": run.epoch, "step": run.step, **metrics})
        run.manager.call("after_epoch", run=run, epoch=run.epoch, metrics=metrics)
        s.last_metrics = metrics
        s.rewind.take(run.model, run.epoch)  # once imp.rewind_epoch epochs are done
        checkpoint.save(s, run)
        bar.end_epoch(run.epoch, metrics)

    def _finish(self) -> dict[str, Any]:
        """The finished run's model.pt and summary.json (rank 0); returns the summary."""
        run, s = self.run, self.setup
        summary = make_summary(s, run, s.elapsed)
        if s.compiler is not None:
            s.notes.append(s.compiler.note())
        if run.is_main:
            pruning.save(run.model, run.out_dir / "model.pt")  # with its masks, if any
            rundir.write_json(run.out_dir / "summary.json", summary)
        return summary


def diverged(run: Run) -> FpError:
    return FpError(f"the training loss became NaN or infinite in epoch {run.epoch + 1}; the last "
                   f"good checkpoint is kept in {run.out_dir / rundir.CHECKPOINTS} (lower "
                   f"train.lr or check the data).")


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
