"""The figures of ``fp report``, drawn headless (matplotlib's Agg canvas, no pyplot state).

Each figure takes the configurations and returns the PNG it wrote, or None when the runs hold
nothing to draw; missing keys are skipped, never fatal, because older runs and optional plugins
(the gradient-flow records) log different things.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from fp.tools.report.figure import epoch_position, finish, mean_by, panels, scaled, split_by
from fp.tools.report.flow_plots import flow_figure
from fp.tools.report.records import Config, RunRecord, number


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
