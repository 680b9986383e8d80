"""Progress over the steps of a run: a rich bar on a terminal, plain lines in a log file (a batch
job's log is never silent for minutes), and one printed line per epoch either way."""
from __future__ import annotations

import time
from typing import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn


class Progress:
    """``with Progress(epochs, steps_per_epoch) as bar``; silent when ``enabled`` is False.

    Off a terminal (output redirected to a file or a pipe) the bar is replaced by a line every
    ``every_steps`` steps (default: a tenth of an epoch) or every ``every_s`` seconds, whichever
    comes first, but never two within ``min_gap_s`` seconds (tiny test runs stay quiet): steps
    done of the total, steps/s (and images/s when ``batch_size`` is given) and the time left."""

    def __init__(self, epochs: int, steps_per_epoch: int, enabled: bool = True, *,
                 batch_size: int | None = None, every_steps: int | None = None,
                 every_s: float = 30.0, min_gap_s: float = 2.0, console: Console | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = enabled
        self.console = console or Console(stderr=True)
        self.plain = enabled and not self.console.is_terminal
        self.bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TimeRemainingColumn(),
                                console=self.console, transient=True,
                                disable=not enabled or self.plain)
        self.total = epochs * steps_per_epoch
        self.task = self.bar.add_task("training", total=self.total)
        self.steps_per_epoch, self.epochs, self.batch_size = steps_per_epoch, epochs, batch_size
        self.every_steps = every_steps or max(1, steps_per_epoch // 10)
        self.every_s, self.min_gap_s, self.clock = every_s, min_gap_s, clock
        self.done = 0
        self._mark(0)

    def __enter__(self) -> "Progress":
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def skip(self, steps: int) -> None:
        """Start a resumed run's bar where it left off."""
        self.bar.update(self.task, completed=steps)
        self.done = steps
        self._mark(steps)

    def advance_step(self) -> None:
        self.bar.advance(self.task)
        self.done += 1
        if self.plain and self._due():
            self.console.print(self.line(), markup=False, highlight=False, soft_wrap=True)
            self._mark(self.done)

    def _mark(self, step: int) -> None:
        """Remember when the last line was printed (or counting started), for rates and ETA."""
        self.last_step, self.last_time = step, self.clock()

    def _due(self) -> bool:
        waited = self.clock() - self.last_time
        if waited < self.min_gap_s:
            return False
        return self.done - self.last_step >= self.every_steps or waited >= self.every_s

    def line(self) -> str:
        """``step 1,200/31,250 (4%)  epoch 2/160  40.1 steps/s  5,133 images/s  ETA 0:13:05``,
        the rates over the steps since the last line (pruning speeds a run up as it goes)."""
        seconds = max(self.clock() - self.last_time, 1e-9)
        rate = (self.done - self.last_step) / seconds
        epoch = min(self.done // max(self.steps_per_epoch, 1) + 1, self.epochs)
        images = f"  {rate * self.batch_size:,.0f} images/s" if self.batch_size else ""
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        return (f"step {self.done:,}/{self.total:,} ({self.done / max(self.total, 1):.0%})  "
                f"epoch {epoch}/{self.epochs}  {rate:.1f} steps/s{images}  ETA {_clock(left)}")

    def end_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        kept = metrics.get("filters_kept_frac")
        kept_text = f"  filters kept {kept:.0%}" if kept is not None else ""
        self.console.print(f"epoch {epoch:>3}  loss {metrics['train_loss']:.3f}  "
                           f"train {metrics['train_acc']:.3f}  test {metrics['test_acc']:.3f}  "
                           f"lr {metrics['lr']:.4g}{kept_text}")


def _clock(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"
