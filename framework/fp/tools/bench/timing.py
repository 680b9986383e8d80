"""Side-by-side timing: a measured task and its baseline in one process, both warmed up, then
run in pairs in alternating order; the ratio is the median over pairs."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch


@dataclass
class Task:
    """One repetition runs ``run(prepare())``; only ``run`` is timed (``prepare`` makes fresh
    copies and the like)."""

    run: Callable[[Any], Any]
    prepare: Callable[[], Any] = lambda: None


def as_task(work: Task | Callable[[], Any]) -> Task:
    return work if isinstance(work, Task) else Task(lambda _: work())


@dataclass
class Timing:
    """Seconds per repetition; ``measured[i]`` and ``baseline[i]`` ran back to back."""

    measured: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)

    def ratio(self, speedup: bool = False) -> float:
        """The median over pairs of measured/baseline time (the inverse for a speed-up). The two
        runs of a pair are back to back, so a slow phase of the host (seconds of contention,
        which on a shared machine slows both) cancels within the pair, and the median ignores
        pairs that a short burst hit on one side only. (Each side's fastest repetition, which
        ``make_row`` also reports, lets one lucky quiet moment decide the ratio.)"""
        pairs = [b / m if speedup else m / b for m, b in zip(self.measured, self.baseline)]
        return statistics.median(pairs)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so the clock stops after the work and not after its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: at most this many back-to-back runs make one timed sample of the shorter side
MAX_RUNS = 8


def seconds(task: Task, device: torch.device, runs: int = 1) -> float:
    """Mean seconds of ``runs`` back-to-back runs, each after its own untimed ``prepare``."""
    total = 0.0
    for _ in range(runs):
        state = task.prepare()
        synchronize(device)
        start = time.perf_counter()
        task.run(state)
        synchronize(device)
        total += time.perf_counter() - start
    return total / runs


def measure_ratio(measured: Task | Callable[[], Any], baseline: Task | Callable[[], Any], *,
            repeats: int, device: torch.device, warmup: int = 1, balance: bool = True) -> Timing:
    """Warm both up (one-off costs: allocator, kernel selection, lazy imports), then time
    ``repeats`` pairs, alternating which of the two goes first. With ``balance``, a sample of
    the shorter side is the mean of as many back-to-back runs (up to MAX_RUNS) as make it about
    as long as the other, so that the two halves of a pair see the host's load alike (a short
    sample is more likely than a long one to fall wholly in a quiet moment)."""
    measured, baseline = as_task(measured), as_task(baseline)
    for _ in range(warmup):
        base_s = seconds(baseline, device)
        measured_s = seconds(measured, device)
    runs = {id(measured): 1, id(baseline): 1}
    if balance and warmup and min(base_s, measured_s) > 0:
        shorter, longer = sorted([(measured_s, measured), (base_s, baseline)], key=lambda p: p[0])
        runs[id(shorter[1])] = min(MAX_RUNS, max(1, round(longer[0] / shorter[0])))
    timing = Timing()
    for rep in range(repeats):
        pair = [(measured, timing.measured), (baseline, timing.baseline)]
        for task, times in (pair if rep % 2 else pair[::-1]):
            times.append(seconds(task, device, runs[id(task)]))
    return timing


def meets(ratio: float, target: str) -> bool:
    """``target`` is "<= x" or ">= x"."""
    op, bound = target.split()
    return ratio <= float(bound) if op == "<=" else ratio >= float(bound)


def make_row(name: str, timing: Timing, target: str, *, baseline: str, speedup: bool = False,
             notes: str = "") -> dict[str, Any]:
    """One benchmark result as plain JSON data. ``ratio`` is measured/baseline time, or
    baseline/measured (a speed-up, ``ratio_is`` says which), the median over pairs; times are
    each side's fastest repetition in seconds, and ``runs_s`` keeps every repetition."""
    ratio = timing.ratio(speedup)
    return {
        "name": name, "ratio": round(ratio, 4), "target": target, "ok": meets(ratio, target),
        "ratio_is": "baseline/measured time" if speedup else "measured/baseline time",
        "measured_s": round(min(timing.measured), 6),
        "baseline_s": round(min(timing.baseline), 6),
        "baseline": baseline, "notes": notes,
        "runs_s": {"measured": [round(t, 6) for t in timing.measured],
                   "baseline": [round(t, 6) for t in timing.baseline]},
    }


def skipped_row(name: str, target: str, *, baseline: str, notes: str) -> dict[str, Any]:
    """A row that does not apply on this device: kept in the output, so its absence is explained."""
    return {"name": name, "ratio": None, "target": target, "ok": True, "skipped": True,
            "ratio_is": None, "measured_s": None, "baseline_s": None, "baseline": baseline,
            "notes": notes, "runs_s": {"measured": [], "baseline": []}}
