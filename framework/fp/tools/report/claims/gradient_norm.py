"""Claim (iii): raising ‖g‖² by pruning gives poor models. Two verdicts: the mechanism, per group
of interventions (grasp's removal raises ‖g‖² more than grad_norm's), and the outcome, per
setting of full runs (grasp's pruned models end less accurate) (docs/claims.md, claim (iii))."""
from __future__ import annotations

from fp.tools.report.claims.comparisons import (PRIMARY, SECONDARY, Claim, Judgement, adjust,
                                                cell, declare, section, summary,
                                                verdict_line)
from fp.tools.report.claims.interventions import Group, value
from fp.tools.report.claims.settings import Setting, accuracy, kept_columns, measure_table

CLAIM = Claim(
    "iii", "Raising ‖g‖² gives poor models",
    "Gradient-norm-based pruning changes second-order dynamics; raising the gradient norm by "
    "pruning (GraSP) can give poor models.",
    "mechanism: per seed, log(‖g_S‖² after / before), the surviving parameters' squared "
    "gradient norm on the scoring set when the filters a measure would prune are removed at the "
    "earliest dense checkpoint, at the training temperature; primary: grad_norm "
    "below grasp; secondary: the same at each measure's own temperature. Outcome: per seed, the "
    "final test accuracy of full runs; primary: grasp below grad_norm; secondary: the best "
    "epoch's test accuracy. The two are judged separately",
    "the mechanism is measured on dense checkpoints and the outcome on separately trained "
    "runs, so two supported verdicts agree with, but do not show, that the raised ‖g_S‖² causes "
    "the lost accuracy.")

RAISER, PRESERVER = "grasp", "grad_norm"
NOUN = "interventions"
#: the mechanism table's columns: line key -> label
COLUMNS = {"log_grad_ratio_train_t": "log ‖g_S‖² ratio, training T",
           "log_grad_ratio_measure_t": "log ‖g_S‖² ratio, measure's T",
           "grad_norm_sq_before_train_t": "‖g_S‖² before, training T",
           "grad_norm_sq_after_train_t": "‖g_S‖² after, training T"}


def ratio(temperature: str, epoch: int) -> str:
    return f"log ‖g_S‖² after/before at the {temperature} T, epoch {epoch}"


def mechanism(group: Group) -> Judgement:
    first = group.epochs()[0]
    primary = declare(PRIMARY, PRESERVER, RAISER, ratio("training", first),
                      group.values("log_grad_ratio_train_t", first), NOUN)
    secondary = adjust([declare(SECONDARY, PRESERVER, RAISER, ratio("measure's own", first),
                                group.values("log_grad_ratio_measure_t", first), NOUN)])
    judgement = Judgement(f"{CLAIM.tag}, mechanism", group.title, primary, secondary)
    judgement.lines = [f"### Mechanism — {group.title}", "", *mechanism_table(group),
                       *removed_table(group), *section(judgement)]
    return judgement


def outcome(setting: Setting) -> Judgement:
    final, best = accuracy("test_acc"), accuracy("best_test_acc")
    primary = declare(PRIMARY, RAISER, PRESERVER, "final test accuracy (%)", setting.values(final))
    secondary = adjust([declare(SECONDARY, RAISER, PRESERVER, "best test accuracy (%)",
                                setting.values(best))])
    judgement = Judgement(f"{CLAIM.tag}, outcome", f"{setting.title} ({setting.arm})", primary,
                          secondary)
    columns = {"final test acc (%)": lambda runs: summary([final(r) for r in runs]),
               "best test acc (%)": lambda runs: summary([best(r) for r in runs])}
    header, cells = kept_columns(setting)
    judgement.lines = [f"### Outcome — {setting.title} — {setting.arm}", "",
                       *measure_table(setting, columns, first=[RAISER, PRESERVER]),
                       *section(judgement, header, cells)]
    return judgement


def rows_table(group: Group, header: list[str], cells) -> list[str]:
    """One row per checkpoint epoch and measure (grasp and grad_norm first)."""
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    for epoch in group.epochs():
        for measure in group.measures(epoch, first=[RAISER, PRESERVER]):
            lines.append(f"| {epoch} | {measure} | " + " | ".join(cells(epoch, measure)) + " |")
    return lines + [""]


def mechanism_table(group: Group) -> list[str]:
    def cells(epoch: int, measure: str) -> list[str]:
        rows = group.at(epoch, measure)
        return [str(len(rows)), *(summary([value(r, key) for r in rows]) for key in COLUMNS)]
    return rows_table(group, ["checkpoint epoch", "measure", "seeds", *COLUMNS.values()], cells)


def removed_table(group: Group) -> list[str]:
    """The fraction of each of the first convolutions' filters removed (mean over seeds)."""
    names = list(dict.fromkeys(n for e in group.epochs() for m in group.measures(e)
                               for n in group.fractions_removed(e, m)))
    if not names:
        return []

    def cells(epoch: int, measure: str) -> list[str]:
        removed = group.fractions_removed(epoch, measure)
        return [f"{removed[n]:.3f}" if n in removed else "–" for n in names]
    return ["Fraction of the first convolutions' filters removed (mean over seeds):", "",
            *rows_table(group, ["checkpoint epoch", "measure", *names], cells)]


def absent(reason: str) -> Judgement:
    """The mechanism's judgement when there are no interventions at all."""
    primary = declare(PRIMARY, PRESERVER, RAISER, "log ‖g_S‖² after/before at the training T",
                      {}, missing=reason)
    judgement = Judgement(f"{CLAIM.tag}, mechanism", "no interventions", primary)
    judgement.lines = ["### No interventions", "", verdict_line(judgement), ""]
    return judgement
