"""The paper's three claims (Lubana & Dick, ICLR 2021), judged from run directories.

Each claim is tested by one per-run quantity read from metrics.jsonl and summary.json, summarised
per measure as mean ± sample std over seeds, and decided by comparing measures pairwise: a pair
supports or contradicts the claim only when its means differ by more than the sum of their stds
(the mean ± std intervals do not overlap). docs/claims.md defines every quantity and the rule.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from fp.tools.report.claims_stats import FAILS, HOLDS, UNDETERMINED, Comparison, Stat, above, compare, decide
from fp.tools.report.records import GROUP_KEYS, Config, RunRecord, number

__all__ = ["CLAIMS", "FAILS", "HOLDS", "UNDETERMINED", "Judgement", "Stat", "judge", "settings_of"]


# --- per-run quantities ---------------------------------------------------------------------

def prune_flows(run: RunRecord) -> list[dict]:
    """The flow records of prune events, one per event index (a resumed run's last copy)."""
    by_index = {}
    for ordinal, record in enumerate(f for f in run.flows if f.get("at", "prune") == "prune"):
        by_index[record.get("index", ordinal)] = record
    return list(by_index.values())


def mean_of(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def post_prune_losses(run: RunRecord) -> dict[float, float]:
    """Epoch -> training loss, for the epochs that end after the last prune event."""
    steps = [s for s in (number(p.get("step")) for p in run.prunes) if s is not None]
    if not steps:
        return {}
    return {number(e.get("epoch")): number(e.get("train_loss")) for e in run.epochs
            if (number(e.get("step")) or 0) > max(steps) and number(e.get("epoch")) is not None
            and number(e.get("train_loss")) is not None}


def post_prune_train_loss(run: RunRecord) -> float | None:
    """Mean training loss over the epochs that end after the last prune event."""
    return mean_of(post_prune_losses(run).values())


def loss_change_abs(run: RunRecord) -> float | None:
    """Mean over prune events of |L_after − L_before|."""
    return mean_of(abs(f["loss_change"]) if number(f.get("loss_change")) is not None else None
                   for f in prune_flows(run))


def first_order_gap(run: RunRecord) -> float | None:
    """Mean over prune events of |ΔL measured − ΔL predicted to first order|."""
    def gap(f: dict) -> float | None:
        measured, predicted = number(f.get("loss_change")), number(f.get("loss_change_predicted"))
        return None if measured is None or predicted is None else abs(measured - predicted)
    return mean_of(gap(f) for f in prune_flows(run))


def grad_norm_ratio(run: RunRecord) -> float | None:
    """Mean over prune events of ‖g‖² after / ‖g‖² before."""
    def ratio(f: dict) -> float | None:
        before, after = number(f.get("grad_norm_sq_before")), number(f.get("grad_norm_sq_after"))
        return after / before if before and after is not None else None
    return mean_of(ratio(f) for f in prune_flows(run))


def final_accuracy(run: RunRecord) -> float | None:
    value = number(run.summary.get("test_acc"))
    return None if value is None else 100 * value


# --- the claims -----------------------------------------------------------------------------

@dataclass
class Quantity:
    key: str
    label: str
    of_run: Callable[[RunRecord], float | None]


@dataclass
class Claim:
    tag: str
    statement: str
    test: str
    quantities: list[Quantity]
    required: list[str]
    comparisons: Callable[[dict[str, dict[str, Stat]]], list[Comparison]]
    #: measures a claim names (shown first); every other measure in the runs is shown too
    measures: list[str] = field(default_factory=list)


AGNOSTIC = ("snip", "grasp", "grad_norm", "random")      # magnitude-agnostic measures in (i)
NOT_LOSS_PRESERVING = ("magnitude", "grasp", "grad_norm", "random")   # compared with snip in (ii)

LOSS_AFTER = Quantity("post_prune_loss", "train loss after last prune", post_prune_train_loss)
DELTA_L = Quantity("abs_loss_change", "|ΔL| at prune", loss_change_abs)
GAP = Quantity("first_order_gap", "|ΔL − ΔL̂| at prune", first_order_gap)
RATIO = Quantity("grad_norm_ratio", "‖g‖² after/before", grad_norm_ratio)
ACC = Quantity("final_acc", "final test acc (%)", final_accuracy)


def _claim_i(stats):
    return [compare(LOSS_AFTER.label, stats[LOSS_AFTER.key], "magnitude", m) for m in AGNOSTIC]


def _claim_ii(stats):
    return [compare(DELTA_L.label, stats[DELTA_L.key], "snip", m) for m in NOT_LOSS_PRESERVING]


def _claim_iii(stats):
    ratios, accs = stats[RATIO.key], stats[ACC.key]
    return [above(RATIO.label, ratios.get("grasp"), "grasp", 1.0),
            compare(RATIO.label, ratios, "grad_norm", "grasp"),
            compare(ACC.label, accs, "grasp", "grad_norm")]


CLAIMS = [
    Claim("i", "Magnitude-based pruning removes the parameters that contribute least to reducing "
               "the loss, so its pruned models converge faster than magnitude-agnostic ones.",
          "magnitude's mean training loss over the epochs after the last prune event is lower "
          "than that of snip, grasp, grad_norm and random",
          [LOSS_AFTER], ["magnitude", "snip"], _claim_i, ["magnitude", *AGNOSTIC]),
    Claim("ii", "Loss-preservation pruning (snip) preserves first-order model dynamics, which "
                "suits minimally trained models.",
          "snip's mean |ΔL| at prune events is smaller than that of magnitude, grasp, grad_norm "
          "and random (the first-order gap |ΔL − ΔL̂| is shown beside it)",
          [DELTA_L, GAP], ["snip", "magnitude"], _claim_ii, ["snip", *NOT_LOSS_PRESERVING]),
    Claim("iii", "Gradient-norm-based pruning changes second-order dynamics; raising the gradient "
                 "norm by pruning (grasp) can give poor models.",
          "grasp's mean ‖g‖² after/before ratio at prune events is above 1 and above "
          "grad_norm's, and grasp's final test accuracy is below grad_norm's",
          [RATIO, ACC], ["grasp", "grad_norm"], _claim_iii, ["grasp", "grad_norm"]),
]


@dataclass
class Judgement:
    claim: Claim
    stats: dict[str, dict[str, Stat]]      # quantity key -> measure -> Stat
    comparisons: list[Comparison]
    verdict: str
    reason: str


def per_measure(configs: Sequence[Config], quantity: Quantity) -> dict[str, Stat]:
    stats = {}
    for config in configs:
        values = [quantity.of_run(run) for run in config.runs]
        stats[str(config.summary.get("measure"))] = Stat([v for v in values if v is not None])
    return {m: s for m, s in stats.items() if s.n}


def judge(configs: Sequence[Config]) -> list[Judgement]:
    """The three claims judged on configurations that differ only in their measure."""
    judgements = []
    for claim in CLAIMS:
        stats = {q.key: per_measure(configs, q) for q in claim.quantities}
        comparisons = claim.comparisons(stats)
        verdict, reason = decide(comparisons, claim.required)
        judgements.append(Judgement(claim, stats, comparisons, verdict, reason))
    return judgements


def settings_of(configs: Sequence[Config]) -> dict[tuple, list[Config]]:
    """Configurations grouped by everything but the measure (one claims check per group)."""
    groups: dict[tuple, list[Config]] = {}
    for config in configs:
        key = tuple(config.summary.get(k) for k in GROUP_KEYS if k != "measure")
        groups.setdefault(key, []).append(config)
    return groups
