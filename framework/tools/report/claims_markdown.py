"""claims.md and the "Claims" section of report.md: the three claims' quantities per measure
(mean ± std over seeds), the pairwise comparisons and the verdicts computed by ``fp.tools.report.claims``."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from fp.tools.report.claims import Judgement, Stat, judge, settings_of
from fp.tools.report.records import GROUP_KEYS, Config
from fp.tools.report.markdown import mean_std

DOC = "docs/claims.md"
RULE = ("A comparison counts only when two means differ by more than the sum of their sample "
        "stds (ddof = 1): the mean ± std intervals do not overlap. A claim holds when every "
        "comparison supports it, does not hold when any contradicts it, and is undetermined "
        f"otherwise or when the runs it needs are missing (definitions: {DOC}).")


def stat_text(stat: Stat | None, digits: int = 4) -> str:
    if stat is None or not stat.n:
        return "–"
    if stat.std is None:
        return f"{stat.mean:.{digits}g} (1 seed)"
    return f"{stat.mean:.{digits}g} ± {stat.std:.2g}"


def cell(text: str) -> str:
    """Text for a markdown table cell (a bare | would end the cell)."""
    return text.replace("|", "\\|")


def setting_title(configs: Sequence[Config]) -> str:
    summary = configs[0].summary
    return ", ".join(f"{k} {summary.get(k)}" for k in GROUP_KEYS if k != "measure"
                     and summary.get(k) is not None)


def ordered_measures(judgement: Judgement) -> list[str]:
    """The claim's own measures first, then random and magnitude, then the rest found."""
    found = {m for stats in judgement.stats.values() for m in stats}
    named = [m for m in [*judgement.claim.measures, "random", "magnitude"] if m in found]
    return list(dict.fromkeys(named + sorted(found)))


def claim_section(judgement: Judgement, seeds: dict[str, int]) -> list[str]:
    claim = judgement.claim
    lines = [f"### Claim ({claim.tag})", "", claim.statement, "",
             f"Test: {claim.test}.", "",
             "| measure | seeds | " + " | ".join(cell(q.label) for q in claim.quantities) + " |",
             "|" + "---|" * (2 + len(claim.quantities))]
    for measure in ordered_measures(judgement):
        cells = [stat_text(judgement.stats[q.key].get(measure)) for q in claim.quantities]
        lines.append(f"| {measure} | {seeds.get(measure, 0)} | " + " | ".join(cells) + " |")
    lines += ["", "| comparison (expected: left < right) | difference of means | spread | outcome |",
              "|---|---|---|---|"]
    for c in judgement.comparisons:
        numbers = ("–", "–") if c.difference is None else (f"{c.difference:.4g}", f"{c.spread:.4g}")
        outcome = c.outcome if not c.absent else f"missing ({', '.join(c.absent)})"
        lines.append(f"| {cell(c.quantity)}: {c.low} < {c.high} | {numbers[0]} | {numbers[1]} "
                     f"| {outcome} |")
    lines += ["", f"**Verdict ({claim.tag}): {judgement.verdict}** — {judgement.reason}.", ""]
    return lines


def accuracy_table(configs: Sequence[Config]) -> list[str]:
    """Final test accuracy per measure (rows) and fraction of filters pruned (columns)."""
    pruned = sorted({c.summary.get("target") for c in configs}, key=lambda t: (t is None, t or 0))
    lines = ["### Final test accuracy against the fraction of filters pruned", "",
             "| measure | " + " | ".join(f"{t} pruned" for t in pruned) + " |",
             "|" + "---|" * (1 + len(pruned))]
    measures = sorted({str(c.summary.get("measure")) for c in configs},
                      key=lambda m: (m not in ("random", "magnitude"), m))
    for measure in measures:
        cells = []
        for target in pruned:
            same = [c for c in configs if str(c.summary.get("measure")) == measure
                    and c.summary.get("target") == target]
            cells.append(mean_std(*same[0].stat("test_acc")) if same else "–")
        lines.append(f"| {measure} | " + " | ".join(cells) + " |")
    return lines + [""]


def seeds_by_measure(configs: Sequence[Config]) -> dict[str, int]:
    return {str(c.summary.get("measure")): len(c.runs) for c in configs}


def claims_markdown(configs: Sequence[Config], figures: Sequence[Path]) -> tuple[str, list[list]]:
    """claims.md's text, and one [setting, claim tag, verdict] row per judgement."""
    lines = ["# The paper's claims, checked", "",
             "Lubana & Dick, *A Gradient Flow Framework For Analyzing Network Pruning* (ICLR 2021). "
             "Every number is a mean ± sample std over seeds, computed from the runs' "
             "metrics.jsonl and summary.json.", "", RULE, ""]
    verdicts = []
    by_setting = settings_of(configs)
    for members in by_setting.values():
        title = setting_title(members)
        lines += [f"## {title}", ""]
        for judgement in judge(members):
            lines += claim_section(judgement, seeds_by_measure(members))
            verdicts.append([title, judgement.claim.tag, judgement.verdict])
    if len(by_setting) > 1 or len({c.summary.get("target") for c in configs}) > 1:
        lines += ["## Across settings", ""]
    lines += accuracy_table(configs)
    lines += [f"![{f.stem.replace('_', ' ')}]({f.name})" for f in figures]
    return "\n".join(lines) + "\n", verdicts


def report_section(verdicts: list[list]) -> list[str]:
    """The "Claims" section of report.md: the verdicts, with claims.md for the numbers."""
    several = len({v[0] for v in verdicts}) > 1
    lines = ["", "## Claims", "",
             "The paper's three claims judged from these runs; quantities, numbers and "
             "comparisons are in [claims.md](claims.md).", "",
             ("| setting | claim | verdict |" if several else "| claim | verdict |"),
             ("|---|---|---|" if several else "|---|---|")]
    for setting, tag, verdict in verdicts:
        lines.append(f"| {setting} | ({tag}) | {verdict} |" if several else f"| ({tag}) | {verdict} |")
    return lines
