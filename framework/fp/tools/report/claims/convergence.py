"""Claim (i): magnitude-based pruning converges faster. Judged per setting of full runs on L_V,
the loss on the fixed evaluation set, after the last prune event (docs/claims.md, claim (i))."""
from __future__ import annotations

from typing import Sequence

from fp.tools.report import paired
from fp.tools.report.claims.comparisons import (PRIMARY, SECONDARY, Claim, Judgement, adjust,
                                                declare, interval, number, section, summary)
from fp.tools.report.claims.eval_set import HORIZONS, loss_after_last_prune, recovery_epochs
from fp.tools.report.claims.settings import Setting, kept_columns, measure_table

CLAIM = Claim(
    "i", "Magnitude-based pruning converges faster",
    "Magnitude-based pruning removes the parameters that contribute least to reducing the loss, "
    "so its pruned models converge faster than those of magnitude-agnostic measures.",
    "per seed, L_V (loss on the fixed evaluation set) at the end of the first epoch after the "
    "last prune event; primary: magnitude below snip; secondary: biased_snip below snip. L_V 3 "
    "and 5 epochs after, and the epochs L_V takes to return to its level just before the first "
    "prune event, are shown beside it, not tested",
    "a lower L_V after equal training does not separate faster convergence from a better start "
    "(the figure shows L_V just after the prune), nor does it say anything about test accuracy "
    "or about other architectures, targets or schedules.")

#: (low, high): the claim expects low's L_V below high's
PRIMARY_PAIR = ("magnitude", "snip")
SECONDARY_PAIRS = (("biased_snip", "snip"),)


def quantity(k: int) -> str:
    return f"L_V {k} epoch{'s' if k != 1 else ''} after the last prune"


def judge(setting: Setting, horizons: Sequence[int] = HORIZONS) -> Judgement:
    name = quantity(horizons[0])
    values = setting.values(loss_after_last_prune(horizons[0]))
    primary = declare(PRIMARY, *PRIMARY_PAIR, name, values)
    secondary = adjust([declare(SECONDARY, low, high, name, values)
                        for low, high in SECONDARY_PAIRS])
    judgement = Judgement(CLAIM.tag, f"{setting.title} ({setting.arm})", primary, secondary)
    header, cells = kept_columns(setting)
    judgement.lines = [f"### {setting.title} — {setting.arm}", "", *table(setting, horizons),
                       *section(judgement, header, cells), *other_horizons(setting, horizons)]
    return judgement


def table(setting: Setting, horizons: Sequence[int]) -> list[str]:
    columns = {quantity(k): (lambda runs, k=k: summary([loss_after_last_prune(k)(r) for r in runs]))
               for k in horizons}
    columns["epochs to recover L_V (per seed; >n: not by the run's end)"] = recoveries
    return measure_table(setting, columns, first=[*PRIMARY_PAIR, *sum(SECONDARY_PAIRS, ())])


def recoveries(runs) -> str:
    found = [(r.summary.get("seed"), recovery_epochs(r)) for r in runs]
    texts = [rec.text().replace(" (censored)", "") for _, rec in sorted(
        (f for f in found if f[1] is not None), key=lambda f: str(f[0]))]
    return ", ".join(texts) or "–"


def other_horizons(setting: Setting, horizons: Sequence[int]) -> list[str]:
    """Effects (right − left, 95% interval) at the horizons that are shown, not tested."""
    if len(horizons) < 2:
        return []
    lines = ["Effects at the other horizons (right − left, 95% interval; shown, not tested):", ""]
    for k in horizons[1:]:
        values = setting.values(loss_after_last_prune(k))
        effects = []
        for low, high in (PRIMARY_PAIR, *SECONDARY_PAIRS):
            result = paired.compare(low, high, quantity(k), values)
            effects.append(f"{low} < {high}: " + (f"{number(result.mean)} {interval(result)} "
                           f"({result.n} pairs)" if result.n else "no pairs"))
        lines.append(f"- {quantity(k)}: " + "; ".join(effects))
    return lines + [""]
