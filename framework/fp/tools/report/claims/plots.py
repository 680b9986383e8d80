"""The figures beside claims.md, drawn headless like ``fp.tools.report.plots``: L_V after the last
prune event per setting and measure (claim (i)), and the interventions against the checkpoint
epoch per measure (claims (ii) and (iii)). Every measure is a bold mean over seeds over faint
per-seed lines, in the same colour in every panel."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fp.tools.report.claims.eval_set import curve
from fp.tools.report.claims.interventions import Group, value
from fp.tools.report.claims.settings import Setting
from fp.tools.report.figure import DPI, finish, panels
from fp.tools.report.paired import finite

EVAL_LOSS, INTERVENTIONS = "claims_eval_loss.png", "claims_interventions.png"
#: an intervention panel: line key, y label, whether a log scale suits it
PANELS = (("abs_change_removed", "|ΔL_V| when removed", True),
          ("log_grad_ratio_train_t", "log(‖g_S‖² after / before), training T", False))


def palette(measures: Sequence[str]) -> dict[str, tuple]:
    colours = colormaps["tab10"].colors
    return {m: colours[i % len(colours)] for i, m in enumerate(sorted(set(measures)))}


def seeded(ax, by_seed: dict, colour, label: str) -> None:
    """Each seed's points faint, their mean at every x bold."""
    collected: dict[float, list[float]] = {}
    for points in by_seed.values():
        kept = sorted((x, y) for x, y in points.items() if finite(y))
        if kept:
            ax.plot(*zip(*kept), color=colour, alpha=0.25, linewidth=0.8)
        for x, y in kept:
            collected.setdefault(x, []).append(y)
    xs = sorted(collected)
    ax.plot(xs, [np.mean(collected[x]) for x in xs], color=colour, linewidth=2, marker="o",
            markersize=4, label=label)


def title(text: str) -> str:
    return textwrap.fill(text, 60)


def eval_loss(settings: Sequence[Setting], path: Path) -> Path | None:
    curves = [(s, {m: {r.summary.get("seed"): curve(r).since_last_prune() for r in s.runs(m)}
                   for m in s.measures()}) for s in settings]
    shown = [(s, c) for s, c in curves if any(any(by_seed.values()) for by_seed in c.values())]
    if not shown:
        return None
    colours = palette([m for _, c in shown for m in c])
    fig, axes = panels(len(shown), width=6.0, height=4.4)
    for ax, (setting, series) in zip(axes, shown):
        for measure, by_seed in series.items():
            if any(by_seed.values()):
                seeded(ax, by_seed, colours[measure], measure)
        ax.set(title=title(f"{setting.title} ({setting.arm})"), ylabel="L_V (evaluation set)",
               xlabel="epochs after the last prune event (0: just after it)")
        ax.title.set_fontsize("small")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return finish(fig, axes, path)


def interventions(groups: Sequence[Group], path: Path) -> Path | None:
    if not groups:
        return None
    colours = palette([m for g in groups for m in g.measures()])
    fig = Figure(figsize=(12.0, 4.4 * len(groups)), dpi=DPI, layout="constrained")
    grid = fig.subplots(len(groups), len(PANELS), squeeze=False)
    for row, group in zip(grid, groups):
        for ax, (key, label, log) in zip(row, PANELS):
            values = []
            for measure in group.measures():
                by_seed: dict = {}
                for r in (r for e in group.epochs() for r in group.at(e, measure)):
                    by_seed.setdefault(r["seed"], {})[r["epoch"]] = value(r, key)
                values += [v for points in by_seed.values() for v in points.values() if finite(v)]
                seeded(ax, by_seed, colours[measure], measure)
            if log and values and min(values) > 0:
                ax.set_yscale("log")
            if not log:
                ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
            ax.set(title=title(group.title), xlabel="dense checkpoint epoch", ylabel=label)
            ax.title.set_fontsize("small")
            ax.set_xticks(group.epochs())
    return finish(fig, grid.ravel().tolist(), path)


def draw(settings: Sequence[Setting], groups: Sequence[Group], out: Path) -> dict[str, Path]:
    """The figures that have data, by file name."""
    drawn = {EVAL_LOSS: eval_loss(settings, out / EVAL_LOSS),
             INTERVENTIONS: interventions(groups, out / INTERVENTIONS)}
    return {name: path for name, path in drawn.items() if path is not None}
