"""claims.md, and the "Claims" section of report.md: every judgement of the three claims, in the
order of docs/claims.md."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from fp.tools.report.claims import convergence, first_order, gradient_norm, plots
from fp.tools.report.claims.comparisons import Claim, Judgement, cell, interval, number, p_text
from fp.tools.report.claims.eval_set import HORIZONS
from fp.tools.report.claims.interventions import FILE, Group
from fp.tools.report.claims.settings import Setting
from fp.tools.report.paired import ALPHA

DOC = "docs/claims.md"
NO_INTERVENTIONS = (f"no {FILE} (write one with fp intervene, and give it to fp report "
                    "--interventions or put it in a run folder given)")


@dataclass
class Inputs:
    """What the claims are judged from."""

    settings: list[Setting]
    groups: list[Group]
    files: list[Path]


def judge(inputs: Inputs, horizons: Sequence[int] = HORIZONS) -> dict[str, list[Judgement]]:
    """Claim tag -> its judgements (one per setting or group; claim (iii) has two kinds)."""
    groups = inputs.groups
    return {
        "i": [convergence.judge(s, horizons) for s in inputs.settings],
        "ii": [first_order.judge(g) for g in groups] or [first_order.absent(NO_INTERVENTIONS)],
        "iii": ([gradient_norm.mechanism(g) for g in groups]
                or [gradient_norm.absent(NO_INTERVENTIONS)])
               + [gradient_norm.outcome(s) for s in inputs.settings],
    }


def claims_markdown(inputs: Inputs, figures: dict[str, Path],
                    horizons: Sequence[int] = HORIZONS) -> tuple[str, list[Judgement]]:
    """claims.md's text and every judgement in it."""
    judged = judge(inputs, horizons)
    everything = [j for js in judged.values() for j in js]
    lines = [*intro(inputs), *summary_table(everything)]
    figure_of = {"i": [plots.EVAL_LOSS], "ii": [plots.INTERVENTIONS], "iii": [plots.INTERVENTIONS]}
    for claim in (convergence.CLAIM, first_order.CLAIM, gradient_norm.CLAIM):
        lines += claim_head(claim)
        lines += [f"![{name.removesuffix('.png').replace('_', ' ')}]({name})\n"
                  for name in figure_of[claim.tag] if name in figures]
        for judgement in judged[claim.tag]:
            lines += judgement.lines
        lines += [f"What this test cannot show: {claim.cannot_show}", ""]
    return "\n".join(lines) + "\n", everything


def intro(inputs: Inputs) -> list[str]:
    runs = [r for s in inputs.settings for c in s.configs for r in c.runs]
    without = sum(not r.evals for r in runs)
    rows = sum(len(g.rows) for g in inputs.groups)
    files = ", ".join(str(f) for f in inputs.files) or "none found"
    lines = ["# The paper's claims, checked", "",
             "Lubana & Dick, *A Gradient Flow Framework For Analyzing Network Pruning* "
             f"(ICLR 2021). Judged from {count(len(runs), 'full run')} in "
             f"{count(len(inputs.settings), 'setting')} and {count(rows, 'intervention')} in "
             f"{count(len(inputs.groups), 'group')} ({FILE}: {files}).", "",
             "Each comparison pairs the two measures' runs seed by seed and reads \"left below "
             "right\": the effect is the mean over seeds of right − left (positive agrees with "
             "the claim), with its paired-t 95% interval and the exact one-sided sign-flip p. "
             "Each claim has one primary comparison, tested alone; its secondaries' p are "
             f"Holm-adjusted. At alpha = {ALPHA}: supported, contradicted (the reverse is "
             "significant), not resolved, or not resolved (runs missing) with fewer than two "
             f"paired seeds. Every quantity and comparison is defined in {DOC}.", ""]
    if without:
        lines += [f"{without} of {len(runs)} runs have no eval_set records (data.eval_samples = "
                  "0), so claim (i) cannot use them.", ""]
    return lines


def count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def summary_table(judgements: Sequence[Judgement]) -> list[str]:
    lines = ["## Verdicts", "",
             "| claim | setting | primary comparison | effect | 95% interval | p | verdict |",
             "|---|---|---|---|---|---|---|"]
    for j in judgements:
        r = j.primary.result
        cells = [f"({j.tag})", j.scope, f"{r.low} < {r.high}: {r.quantity}", number(r.mean),
                 interval(r), p_text(r), j.verdict]
        lines.append("| " + " | ".join(cell(c) for c in cells) + " |")
    return lines + [""]


def claim_head(claim: Claim) -> list[str]:
    return [f"## Claim ({claim.tag}): {claim.title}", "", f"> {claim.statement}", "",
            f"Test: {claim.test}.", ""]


def report_section(judgements: Sequence[Judgement]) -> list[str]:
    """The "Claims" section of report.md: the verdicts, with claims.md for the numbers."""
    lines = ["", "## Claims", "",
             "The paper's three claims judged from these runs by paired comparisons over seeds; "
             "numbers, tables and figures are in [claims.md](claims.md).", "",
             "| claim | setting | verdict |", "|---|---|---|"]
    lines += [f"| ({j.tag}) | {cell(j.scope)} | {j.verdict} |" for j in judgements]
    return lines
