"""The gradient-flow figure of ``fp report``: the quantities logged just before and after each
prune event ("flow" records), and the predicted against the observed loss change."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from fp.tools.report.figure import epoch_position, finish, mean_by, panels
from fp.tools.report.records import Config, RunRecord, number

#: gradient-flow quantities logged just before and after each prune event (paper, Sec. 4)
FLOW_PANELS = (("grad_norm_sq", "‖g‖² (squared gradient norm)"), ("loss", "training loss"))


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
