"""Shared pieces of the report's figures: the panel grid, the saved PNG, and the averaging of
run records onto an axis."""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from matplotlib.figure import Figure

from fp.tools.report.records import Config, RunRecord, number

DPI = 110


def scaled(value, factor: float = 100.0) -> float | None:
    value = number(value)
    return None if value is None else factor * value


def mean_by(points: Iterable[tuple[float | None, float | None]]) -> tuple[list[float], list[float]]:
    """Mean y at each x over all runs, x sorted; points missing either value are skipped."""
    collected: dict[float, list[float]] = defaultdict(list)
    for x, y in points:
        if x is not None and y is not None:
            collected[x].append(y)
    xs = sorted(collected)
    return xs, [float(np.mean(collected[x])) for x in xs]


def epoch_position(run: RunRecord) -> Callable[[dict], float | None]:
    """Where a record falls on the epoch axis: its step interpolated between the epoch ends."""
    steps = [0.0] + [number(r.get("step")) or 0.0 for r in run.epochs]
    epochs = [0.0] + [number(r.get("epoch")) or 0.0 for r in run.epochs]

    def position(record: dict) -> float | None:
        step = number(record.get("step"))
        if step is not None and len(steps) > 1:
            return float(np.interp(step, steps, epochs))
        return number(record.get("epoch"))

    return position


def panels(count: int, width: float = 5.0, height: float = 3.6) -> tuple[Figure, list]:
    cols = min(count, 3)
    fig = Figure(figsize=(width * cols, height * math.ceil(count / cols)), dpi=DPI,
                 layout="constrained")
    axes = fig.subplots(math.ceil(count / cols), cols, squeeze=False).ravel().tolist()
    for unused in axes[count:]:
        unused.set_visible(False)
    return fig, axes[:count]


def finish(fig: Figure, axes: list, path: Path) -> Path:
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.savefig(path)
    return path


def split_by(configs: Sequence[Config], describe: Callable[[dict], str]) -> dict[str, list[Config]]:
    parts: dict[str, list[Config]] = defaultdict(list)
    for config in configs:
        parts[describe(config.summary)].append(config)
    return dict(sorted(parts.items()))
