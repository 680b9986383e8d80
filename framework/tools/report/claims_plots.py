"""The figures beside claims.md, drawn headless like ``fp.tools.report.plots``: training loss after the last
prune event per measure (mean over seeds, ± std shaded), and ‖g‖² just before and just after
each prune event per measure (mean ± std over seeds)."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.ticker import MaxNLocator

from fp.tools.report.claims import post_prune_losses, prune_flows
from fp.tools.report.figure import finish, panels
from fp.tools.report.records import Config, RunRecord, number


def band(series: Sequence[dict[float, float]]) -> tuple[list, np.ndarray, np.ndarray]:
    """x, mean and std (0 for one value) at every x any series has."""
    collected = defaultdict(list)
    for points in series:
        for x, y in points.items():
            collected[x].append(y)
    xs = sorted(collected)
    means = np.array([np.mean(collected[x]) for x in xs])
    stds = np.array([np.std(collected[x], ddof=1) if len(collected[x]) > 1 else 0.0 for x in xs])
    return xs, means, stds


def train_loss_after_pruning(configs: Sequence[Config], path: Path) -> Path | None:
    series = {c.label: [post_prune_losses(r) for r in c.runs] for c in configs}
    series = {label: runs for label, runs in series.items() if any(runs)}
    if not series:
        return None
    fig, axes = panels(1, width=7.0, height=4.5)
    ax = axes[0]
    for label, runs in series.items():
        xs, means, stds = band(runs)
        color = ax.plot(xs, means, marker="o", label=label)[0].get_color()
        ax.fill_between(xs, means - stds, means + stds, color=color, alpha=0.2)
    ax.set(title="training loss after the last prune event (mean ± std over seeds)",
           xlabel="epoch", ylabel="training loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return finish(fig, axes, path)


def grad_norms(run: RunRecord) -> dict[str, dict[float, float]]:
    """'before' / 'after' -> prune event index -> ‖g‖²."""
    out: dict[str, dict[float, float]] = {"before": {}, "after": {}}
    for ordinal, record in enumerate(prune_flows(run), 1):
        index = number(record.get("index")) or ordinal
        for when in out:
            value = number(record.get(f"grad_norm_sq_{when}"))
            if value is not None:
                out[when][index] = value
    return out


def grad_norm_at_prunes(configs: Sequence[Config], path: Path) -> Path | None:
    shown = [c for c in configs if any(grad_norms(r)["before"] for r in c.runs)]
    if not shown:
        return None
    fig, axes = panels(len(shown), width=4.5, height=3.6)
    for ax, config in zip(axes, shown):
        norms = [grad_norms(r) for r in config.runs]
        for offset, when in ((-0.18, "before"), (0.18, "after")):
            xs, means, stds = band([n[when] for n in norms])
            ax.bar(np.array(xs) + offset, means, width=0.36, yerr=stds, capsize=3, label=when)
        ax.set(title=config.label, xlabel="prune event", ylabel="‖g‖²", yscale="log")
        ax.set_xticks(sorted({x for n in norms for x in n["before"]}))
    return finish(fig, axes, path)


#: file name -> figure, in the order claims.md shows them
FIGURES = {"claims_train_loss.png": train_loss_after_pruning,
           "claims_grad_norm.png": grad_norm_at_prunes}


def draw_claims(configs: Sequence[Config], out: Path) -> list[Path]:
    written = [draw(configs, out / name) for name, draw in FIGURES.items()]
    return [path for path in written if path is not None]
