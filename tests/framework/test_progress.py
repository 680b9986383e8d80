"""Plain progress lines when the output is a log file, on a fake clock (nothing is timed)."""
import io

from rich.console import Console

from fp.engine.progress import Progress


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def logged(**options):
    out, clock = io.StringIO(), Clock()
    console = Console(file=out, force_terminal=False, width=200)
    bar = Progress(4, 50, console=console, clock=clock, **options)
    return bar, out, clock


def steps(bar, clock, count, seconds_each):
    for _ in range(count):
        clock.now += seconds_each
        bar.advance_step()


def test_a_line_every_tenth_of_an_epoch_with_rates_and_eta():
    bar, out, clock = logged(batch_size=128)
    with bar:
        steps(bar, clock, 12, 0.5)
    lines = out.getvalue().splitlines()
    assert lines == ["step 5/200 (2%)  epoch 1/4  2.0 steps/s  256 images/s  ETA 0:01:38",
                     "step 10/200 (5%)  epoch 1/4  2.0 steps/s  256 images/s  ETA 0:01:35"]


def test_slow_steps_still_print_every_30_seconds():
    bar, out, clock = logged(every_steps=1000)
    with bar:
        steps(bar, clock, 3, 20.0)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("step 2/200 (1%)  epoch 1/4  0.1 steps/s")


def test_fast_runs_print_no_more_than_one_line_per_min_gap():
    bar, out, clock = logged()
    with bar:
        steps(bar, clock, 200, 0.01)  # 2 s in all: one line, at the 2-second mark
    assert len(out.getvalue().splitlines()) == 1


def test_a_resumed_run_counts_from_where_it_left_off():
    bar, out, clock = logged()
    with bar:
        bar.skip(100)
        steps(bar, clock, 5, 1.0)
    lines = out.getvalue().splitlines()
    assert lines == ["step 105/200 (52%)  epoch 3/4  1.0 steps/s  ETA 0:01:35"]


def test_terminals_get_the_bar_and_disabled_progress_prints_nothing():
    out = io.StringIO()
    terminal = Progress(1, 10, console=Console(file=out, force_terminal=True))
    assert not terminal.plain
    quiet, out, clock = logged(enabled=False)
    with quiet:
        steps(quiet, clock, 50, 1.0)
        quiet.end_epoch(1, {"train_loss": 1, "train_acc": 0, "test_acc": 0, "lr": 0.1})
    assert out.getvalue() == ""
