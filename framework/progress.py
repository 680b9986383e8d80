"""A progress bar over the steps of a run (rich), and one printed line per epoch."""
from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn


class Progress:
    """``with Progress(epochs, steps_per_epoch) as bar``; silent when ``enabled`` is False."""

    def __init__(self, epochs: int, steps_per_epoch: int, enabled: bool = True) -> None:
        self.enabled = enabled
        self.console = Console(stderr=True)
        self.bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TimeRemainingColumn(),
                                console=self.console, transient=True, disable=not enabled)
        self.task = self.bar.add_task("training", total=epochs * steps_per_epoch)

    def __enter__(self) -> "Progress":
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def skip(self, steps: int) -> None:
        """Start a resumed run's bar where it left off."""
        self.bar.update(self.task, completed=steps)

    def advance_step(self) -> None:
        self.bar.advance(self.task)

    def end_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        kept = metrics.get("filters_kept_frac")
        kept_text = f"  filters kept {kept:.0%}" if kept is not None else ""
        self.console.print(f"epoch {epoch:>3}  loss {metrics['train_loss']:.3f}  "
                           f"train {metrics['train_acc']:.3f}  test {metrics['test_acc']:.3f}  "
                           f"lr {metrics['lr']:.4g}{kept_text}")
