"""The figures of ``fp report``, drawn headless (matplotlib's Agg canvas, no pyplot state).

Each figure takes the configurations and returns the PNG it wrote, or None when the runs hold
nothing to draw; missing keys are skipped, never fatal, because older runs and optional plugins
(the gradient-flow records) log different things.
"""
from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from matplotlib.figure import Figure

from fp.tools.report.records import Config, RunRecord, number

DPI = 110
#: gradient-flow quantities logged just before and after each prune event (paper, Sec. 4)
FLOW_PANELS = (("grad_norm_sq", "‖g‖² (squared gradient norm)"), ("loss", "training loss"))


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


def accuracy_vs_kept(configs: Sequence[Config], path: Path) -> Path | None:
    """Final test accuracy against filters kept, one line per measure and one panel per
    architecture and dataset; error bars are the std over seeds."""
    parts = split_by(configs, lambda s: f"{s.get('architecture', '?')} / {s.get('dataset', '?')}")
    fig, axes = panels(len(parts))
    for ax, (title, members) in zip(axes, parts.items()):
        for measure, same in split_by(members, lambda s: str(s.get("measure", "?"))).items():
            points = sorted((c.kept_percent("filters"), c.stat("test_acc")[0],
                             c.stat("test_acc")[1] or 0.0) for c in same)
            points = [p for p in points if p[0] is not None and p[1] is not None]
            if points:
                xs, means, stds = zip(*points)
                ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=measure)
        ax.set(title=title, xlabel="filters kept (%)", ylabel="final test accuracy (%)")
        ax.invert_xaxis()  # left to right: more filters removed
    return finish(fig, axes, path)


def curves(configs: Sequence[Config], path: Path) -> Path | None:
    """Train (dashed) and test (solid) accuracy per epoch, mean over seeds, one panel per measure;
    dotted lines mark the prune events."""
    parts = split_by([c for c in configs if any(r.epochs for r in c.runs)],
                     lambda s: str(s.get("measure", "?")))
    if not parts:
        return None
    fig, axes = panels(len(parts))
    for ax, (measure, members) in zip(axes, parts.items()):
        for config in members:
            color = plot_epochs(ax, config, "test_acc", "-", f"{config.label} test")
            plot_epochs(ax, config, "train_acc", "--", f"{config.label} train", color, mark=False)
        ax.set(title=measure, xlabel="epoch", ylabel="accuracy (%)")
    return finish(fig, axes, path)


def plot_epochs(ax, config: Config, key: str, style: str, label: str, color=None, factor=100.0,
                mark: bool = True):
    """The mean over seeds of an epoch metric, with the prune events marked; returns its colour."""
    xs, ys = mean_by((number(e.get("epoch")), scaled(e.get(key), factor))
                     for run in config.runs for e in run.epochs)
    if xs:
        color = ax.plot(xs, ys, style, color=color, label=label)[0].get_color()
    position = epoch_position(config.runs[0])
    for record in config.runs[0].prunes if mark else ():
        if position(record) is not None:
            ax.axvline(position(record), color=color or "grey", linestyle=":", linewidth=1)
    return color


def prune_events(configs: Sequence[Config], path: Path) -> Path | None:
    """Gradient-flow quantities just before and after each prune event when the runs logged them
    ("flow" records); otherwise the test accuracy and loss with the prune events marked."""
    if any(run.flows for c in configs for run in c.runs):
        return flow_figure(configs, path)
    pruned = [c for c in configs if any(run.prunes and run.epochs for run in c.runs)]
    if not pruned:
        return None
    fig, axes = panels(2)
    for ax, key, factor, unit in ((axes[0], "test_acc", 100.0, "accuracy (%)"),
                                  (axes[1], "test_loss", 1.0, "loss")):
        for config in pruned:
            plot_epochs(ax, config, key, ".-", config.label, factor=factor)
        ax.set(title=f"{key.replace('_', ' ')} around prune events (dotted)", xlabel="epoch",
               ylabel=unit)
    return finish(fig, axes, path)


def flow_figure(configs: Sequence[Config], path: Path) -> Path:
    records = [f for c in configs for run in c.runs for f in at_prunes(run)]
    shown = [(base, title) for base, title in FLOW_PANELS
             if any(f"{base}_{when}" in f for f in records for when in ("before", "after"))]
    predicted = any(predicted_change(f) is not None for f in records)
    fig, axes = panels(max(len(shown) + predicted, 1))
    for ax, (base, title) in zip(axes, shown):
        for config in configs:
            color = None
            for when, style in (("before", "-o"), ("after", "--x")):
                xs, ys = mean_by(flow_points(config, f"{base}_{when}"))
                if xs:
                    color = ax.plot(xs, ys, style, color=color,
                                    label=f"{config.label} {when}")[0].get_color()
        ax.set(title=f"{title} at prune events", xlabel="epoch", ylabel=title)
    if predicted:
        predicted_vs_observed(axes[len(shown)], configs)
    return finish(fig, axes, path)


def flow_points(config: Config, key: str):
    for run in config.runs:
        position = epoch_position(run)
        for ordinal, record in enumerate(at_prunes(run), 1):
            x = position(record)
            yield (x if x is not None else number(record.get("index")) or ordinal), number(record.get(key))


def predicted_vs_observed(ax, configs: Sequence[Config]) -> None:
    """The first-order predicted loss change of each prune event against the observed change."""
    for config in configs:
        pairs = [(predicted_change(f), change(f)) for run in config.runs for f in at_prunes(run)]
        pairs = [(p, o) for p, o in pairs if p is not None and o is not None]
        if pairs:
            ax.scatter(*zip(*pairs), label=config.label)
    ax.axline((0, 0), slope=1, color="grey", linestyle=":", linewidth=1)
    ax.set(title="loss change at prune events", xlabel="predicted", ylabel="observed")


def at_prunes(run: RunRecord) -> list[dict]:
    """The run's flow records of prune events (records without "at" predate that field)."""
    return [f for f in run.flows if f.get("at", "prune") == "prune"]


def predicted_change(flow: dict) -> float | None:
    """The first-order predicted loss change (named predicted_loss_change by older runs)."""
    return number(flow.get("loss_change_predicted", flow.get("predicted_loss_change")))


def change(flow: dict) -> float | None:
    after, before = number(flow.get("loss_after")), number(flow.get("loss_before"))
    return None if after is None or before is None else after - before


def layer_kept(configs: Sequence[Config], path: Path) -> Path | None:
    """Fraction of each layer's filters kept at the end (the last prune event's widths over the
    first event's widths before pruning), mean over seeds; one panel per architecture."""
    parts = split_by([c for c in configs if any(kept_fractions(r) for r in c.runs)],
                     lambda s: str(s.get("architecture", "?")))
    if not parts:
        return None
    fig, axes = panels(len(parts), width=7.0)
    for ax, (architecture, members) in zip(axes, parts.items()):
        fractions = {id(c): [kept_fractions(r) for r in c.runs] for c in members}
        layers = sorted({n for runs in fractions.values() for f in runs for n in f}, key=natural)
        for config in members:
            ys = [np.mean([f[n] for f in fractions[id(config)] if n in f] or [np.nan]) for n in layers]
            ax.plot(range(len(layers)), ys, marker="o", label=config.label)
        ax.set_xticks(range(len(layers)), [n.removesuffix(".weight") for n in layers],
                      rotation=60, ha="right", fontsize="x-small")
        ax.set(title=architecture, ylabel="filters kept (fraction)", ylim=(0, 1.05))
    return finish(fig, axes, path)


def kept_fractions(run: RunRecord) -> dict[str, float]:
    with_widths = [p for p in run.prunes if isinstance(p.get("widths"), dict)]
    before = [p["widths_before"] for p in with_widths if isinstance(p.get("widths_before"), dict)]
    if not with_widths or not before:
        return {}
    final = with_widths[-1]["widths"]
    return {name: final[name] / width for name, width in before[0].items()
            if number(width) and number(final.get(name)) is not None}


def natural(name: str) -> list:
    """'layer10' after 'layer2': digit runs compare as numbers (metrics.jsonl sorts keys)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]


#: file name -> figure, in the order report.md shows them
FIGURES = {"accuracy_vs_kept.png": accuracy_vs_kept, "curves.png": curves,
           "prune_events.png": prune_events, "layer_kept.png": layer_kept}


def draw_all(configs: Sequence[Config], out: Path) -> list[Path]:
    written = [draw(configs, out / name) for name, draw in FIGURES.items()]
    return [path for path in written if path is not None]
