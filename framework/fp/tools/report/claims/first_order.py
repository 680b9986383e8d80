"""Claim (ii): loss preservation keeps first-order dynamics. Judged per group of interventions on
|ΔL_V|, the change of the loss on the evaluation set when what a measure would prune at a dense
checkpoint is removed (docs/claims.md, claim (ii))."""
from __future__ import annotations

from fp.tools.report.claims.comparisons import (PRIMARY, SECONDARY, Claim, Judgement, Values,
                                                adjust, cell, declare, section, summary,
                                                verdict_line)
from fp.tools.report.claims.interventions import Group, value
from fp.tools.report.paired import finite

CLAIM = Claim(
    "ii", "Loss preservation keeps first-order dynamics",
    "Loss-preservation pruning (snip) preserves first-order model dynamics, which suits "
    "minimally trained models.",
    "per seed, |ΔL_V| when the filters a measure would prune are removed at the earliest dense "
    "checkpoint; primary: snip below magnitude; secondaries: snip below each other measure "
    "there, and snip's advantage over magnitude (|ΔL_V| of magnitude − snip) smaller at the "
    "latest checkpoint than at the earliest",
    "|ΔL_V| is the loss change of one removal with every other weight as the checkpoint left "
    "it; it says nothing about the training that follows, and the trend compares only the "
    "earliest and the latest checkpoints.")

LOSS_PRESERVING, BASELINE = "snip", "magnitude"
NOUN = "interventions"
#: the table's columns: line key -> label
COLUMNS = {"abs_change_removed": "|ΔL_V| removed", "abs_change_zeroed": "|ΔL_V| zeroed",
           "gap_removed": "|ΔL − ΔL̂| removed", "gap_zeroed": "|ΔL − ΔL̂| zeroed"}


def quantity(epoch: int) -> str:
    return f"|ΔL_V| removed at epoch {epoch}"


def judge(group: Group) -> Judgement:
    epochs = group.epochs()
    first = epochs[0]
    values = group.values("abs_change_removed", first)
    primary = declare(PRIMARY, LOSS_PRESERVING, BASELINE, quantity(first), values, NOUN)
    others = [m for m in group.measures(first) if m not in (LOSS_PRESERVING, BASELINE)]
    secondary = [declare(SECONDARY, LOSS_PRESERVING, m, quantity(first), values, NOUN)
                 for m in others]
    judgement = Judgement(CLAIM.tag, group.title, primary,
                          adjust([*secondary, trend(group, first, epochs[-1])]))
    judgement.lines = [f"### {group.title}", "", *table(group), *section(judgement)]
    return judgement


def advantage(group: Group, epoch: int) -> dict:
    """seed -> |ΔL_V| removed of magnitude − that of snip, at checkpoint ``epoch``."""
    values = group.values("abs_change_removed", epoch)
    low, high = values.get(LOSS_PRESERVING, {}), values.get(BASELINE, {})
    return {s: high[s] - low[s] for s in low if s in high and finite(low[s]) and finite(high[s])}


def trend(group: Group, first: int, last: int):
    """Snip's advantage expected to shrink: the latest checkpoint's below the earliest's."""
    name = f"advantage |ΔL_V|({BASELINE}) − |ΔL_V|({LOSS_PRESERVING}), removed"
    later, earlier = f"epoch {last}", f"epoch {first}"
    if first == last:
        return declare(SECONDARY, later, earlier, name, {}, missing="one checkpoint epoch only")
    values: Values = {later: advantage(group, last), earlier: advantage(group, first)}
    return declare(SECONDARY, later, earlier, name, values,
                   missing="" if all(values.values()) else
                   f"{LOSS_PRESERVING} and {BASELINE} do not both have seeds at epochs {first} "
                   f"and {last}")


def table(group: Group) -> list[str]:
    """Per checkpoint epoch and measure, mean ± std over seeds of each column."""
    header = ["checkpoint epoch", "measure", "seeds", *COLUMNS.values()]
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    for epoch in group.epochs():
        for measure in group.measures(epoch, first=[LOSS_PRESERVING, BASELINE]):
            rows = group.at(epoch, measure)
            values = [summary([value(r, key) for r in rows]) for key in COLUMNS]
            lines.append(f"| {epoch} | {measure} | {len(rows)} | " + " | ".join(values) + " |")
    return lines + [""]


def absent(reason: str) -> Judgement:
    """The judgement when there are no interventions at all."""
    primary = declare(PRIMARY, LOSS_PRESERVING, BASELINE, "|ΔL_V| removed at the earliest "
                      "checkpoint", {}, missing=reason)
    judgement = Judgement(CLAIM.tag, "no interventions", primary)
    judgement.lines = ["### No interventions", "", verdict_line(judgement), ""]
    return judgement
