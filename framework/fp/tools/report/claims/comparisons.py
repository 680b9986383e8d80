"""What the three claims share: declared comparisons (one primary and its secondaries, each a
paired comparison over seeds, ``fp.tools.report.paired``), the judgement they give, and the
markdown that shows them (docs/claims.md, "Statistics" and "Verdicts")."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from fp.tools.report import paired
from fp.tools.report.paired import ALPHA, MISSING, Paired, finite

PRIMARY, SECONDARY = "primary", "secondary"

#: measure (or another label) -> seed -> value; a missing or non-finite value drops that seed
Values = dict[str, dict[Any, "float | None"]]


@dataclass
class Comparison:
    """A declared comparison "low below high" and, when it has fewer than two pairs, what is
    missing."""

    role: str
    result: Paired
    missing: str = ""

    @property
    def verdict(self) -> str:
        return self.result.verdict


@dataclass
class Judgement:
    """One claim judged in one setting (full runs) or intervention group: the verdict is the
    primary comparison's; ``lines`` are its subsection of claims.md."""

    tag: str                                  # "i", "ii", "iii, mechanism", "iii, outcome"
    scope: str
    primary: Comparison
    secondary: list[Comparison] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return self.primary.verdict


def declare(role: str, low: str, high: str, quantity: str, values: Values,
            noun: str = "runs", missing: str = "") -> Comparison:
    """The comparison "``low`` below ``high``" of ``values``; ``noun`` names what a measure
    lacks when it is missing ("runs", "interventions")."""
    result = paired.compare(low, high, quantity, values)
    if result.verdict == MISSING:
        missing = missing or what_is_missing(result, values, noun)
    return Comparison(role, result, missing if result.verdict == MISSING else "")


def what_is_missing(result: Paired, values: Values, noun: str) -> str:
    lacking = []
    for name in (result.low, result.high):
        if name not in values:
            lacking.append(f"no {name} {noun}")
        elif not any(finite(v) for v in values[name].values()):
            lacking.append(f"{name} {noun} without {result.quantity}")
    if lacking:
        return "; ".join(lacking)
    seeds = "; ".join(f"{name}: seeds {', '.join(map(str, present(values[name])))}"
                      for name in (result.low, result.high))
    return f"{result.n} seed(s) pair, 2 needed ({seeds})"


def present(by_seed: dict) -> list:
    return sorted(s for s, v in by_seed.items() if finite(v))


def adjust(secondary: list[Comparison]) -> list[Comparison]:
    """Holm across the secondaries that can be tested (two pairs or more); the others stay
    "not resolved (runs missing)" and are not counted."""
    paired.adjust_secondary([c.result for c in secondary if c.result.n >= 2])
    return secondary


# --- summaries of one quantity over seeds -----------------------------------------------------

def summary(values: Sequence[float | None], digits: int = 4) -> str:
    """Mean ± sample std (ddof = 1) over the finite values, or "–"."""
    kept = [float(v) for v in values if finite(v)]
    if not kept:
        return "–"
    if len(kept) == 1:
        return f"{kept[0]:.{digits}g} (1 seed)"
    return f"{np.mean(kept):.{digits}g} ± {np.std(kept, ddof=1):.2g}"


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}%"


# --- markdown -------------------------------------------------------------------------------

HEADER = ["", "comparison (claim: left below right)", "quantity", "pairs",
          "effect (right − left)", "95% interval", "p", "p (Holm)", "verdict"]


def number(value: float, digits: int = 4) -> str:
    return "–" if not finite(value) else f"{value:.{digits}g}"


def cell(text: str) -> str:
    """Text for a markdown table cell (a bare | would end the cell)."""
    return text.replace("|", "\\|")


def table(comparisons: Sequence[Comparison], extra_header: Sequence[str] = (),
          extra: Callable[[Comparison], list[str]] = lambda c: []) -> list[str]:
    header = HEADER + list(extra_header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in comparisons:
        r = c.result
        holm = "–" if c.role == PRIMARY or r.n < 2 else p_text(r, adjusted=True)
        verdict = f"{r.verdict}: {c.missing}" if c.missing else r.verdict
        cells = [c.role, f"{r.low} < {r.high}", r.quantity, str(r.n), number(r.mean),
                 interval(r), p_text(r), holm, verdict, *extra(c)]
        lines.append("| " + " | ".join(cell(x) for x in cells) + " |")
    return lines + [""]


def p_text(result: Paired, adjusted: bool = False) -> str:
    """The one-sided p (Holm-adjusted with ``adjusted``), where there are pairs enough to test
    ("–" below two); a contradicted comparison's also gives the reverse direction's p, which
    decided it."""
    if result.n < 2:
        return "–"
    p, reverse = ((result.p_adjusted, result.p_reverse_adjusted) if adjusted
                  else (result.p, result.p_reverse))
    return number(p, 3) + (f" (reverse {number(reverse, 3)})"
                           if result.verdict == paired.CONTRADICTED else "")


def interval(result: Paired) -> str:
    low, high = result.interval
    return "–" if not finite(low) else f"[{low:.4g}, {high:.4g}]"


def verdict_line(judgement: Judgement) -> str:
    c = judgement.primary
    r = c.result
    head = f"**Verdict ({judgement.tag}): {r.verdict}**"
    if c.missing:
        return f"{head} — {c.missing}."
    return (f"{head} — {r.low} below {r.high} in {r.quantity}: effect {r.high} − {r.low} = "
            f"{number(r.mean)} (95% interval {interval(r)}), one-sided p = {number(r.p, 3)} "
            f"(the reverse direction's: {number(r.p_reverse, 3)}), {r.n} paired seeds.")


def floor_line(judgement: Judgement) -> str:
    """What the seeds allow: an exact sign-flip p is at least 1/2^n, so Holm over k secondaries
    can reach alpha only when 1/2^n <= alpha / k."""
    n = judgement.primary.result.n
    if n < 2:
        return "Floor: fewer than two paired seeds, so nothing can be tested."
    floor = paired.smallest_p(n)
    text = f"Floor: with {n} paired seeds the smallest p is 1/2^{n} = {floor:.3g}"
    tested = [c for c in judgement.secondary if c.result.n >= 2]
    if not tested:
        return text + "."
    k = len(tested)
    needed = math.ceil(math.log2(k / ALPHA))
    enough = sum(c.result.n >= needed for c in tested)
    return (text + f". Holm over the k = {k} secondaries with two or more pairs rejects first "
            f"only a p ≤ {ALPHA}/{k} = {ALPHA / k:.3g}, which needs n ≥ {needed} pairs; "
            + ("each has that many." if enough == k else
               f"{enough} of the {k} have that many." if enough else
               "none has, so no secondary can come out supported or contradicted, whatever "
               "its effect."))


def section(judgement: Judgement, extra_header: Sequence[str] = (),
            extra: Callable[[Comparison], list[str]] = lambda c: []) -> list[str]:
    """The comparisons of a judgement, its verdict line and the floor its seeds set."""
    comparisons = [judgement.primary, *judgement.secondary]
    return [*table(comparisons, extra_header, extra), verdict_line(judgement), "",
            floor_line(judgement), ""]


@dataclass
class Claim:
    """A claim's words in claims.md: the paper's statement, the declared test, and what the
    test cannot show."""

    tag: str
    title: str
    statement: str
    test: str
    cannot_show: str
