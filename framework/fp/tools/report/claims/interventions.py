"""The interventions of ``fp intervene`` (interventions.jsonl): one line per dense checkpoint
(seed, epoch) and measure, with the loss on V before and after zeroing or removing what the
measure would prune, their first-order predictions, and the surviving parameters' ‖g_S‖² on the
scoring set before and after. Claims (ii) and (iii)'s mechanism read them (docs/claims.md,
"Inputs"). A line already measured is measured again only by a new fp intervene, so of two
lines for one checkpoint and measure the last counts; two dense runs giving the same seed are
refused, since they could not be paired."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from fp.errors import ConfigError
from fp.tools.report.claims.comparisons import Values
from fp.tools.report.records import number, read_jsonl

FILE = "interventions.jsonl"
#: every line needs these; they name the intervention
REQUIRED = ("seed", "epoch", "measure")
#: lines that agree on these form one group (one judgement of claims (ii) and (iii))
GROUP_KEYS = ("architecture", "dataset", "fraction")


def gap(kind: str):
    """|ΔL − ΔL̂| of zeroing or removal: the measured change L_kind − L_before against the
    first-order prediction ``predicted_kind`` (a change, not a loss)."""
    def of_row(row: dict) -> float | None:
        before, after = number(row.get("loss_before")), number(row.get(f"loss_{kind}"))
        predicted = number(row.get(f"predicted_{kind}"))
        return None if None in (before, after, predicted) else abs(after - before - predicted)
    return of_row


#: quantities computed from a line rather than read from it
DERIVED = {"gap_zeroed": gap("zeroed"), "gap_removed": gap("removed")}


def value(row: dict, key: str) -> float | None:
    return DERIVED[key](row) if key in DERIVED else number(row.get(key))


@dataclass
class Group:
    """The interventions of one architecture, dataset and fraction; one row per (seed, epoch,
    measure), the last line of each winning."""

    rows: list[dict]

    @property
    def title(self) -> str:
        first = self.rows[0]
        return ", ".join(f"{k} {first.get(k)}" for k in GROUP_KEYS
                         if first.get(k) is not None) or "interventions"

    def epochs(self) -> list[int]:
        return sorted({row["epoch"] for row in self.rows})

    def measures(self, epoch: int | None = None, first: Sequence[str] = ()) -> list[str]:
        found = sorted({str(r["measure"]) for r in self.rows if epoch in (None, r["epoch"])})
        return list(dict.fromkeys([m for m in first if m in found] + found))

    def at(self, epoch: int, measure: str) -> list[dict]:
        return [r for r in self.rows if r["epoch"] == epoch and str(r["measure"]) == measure]

    def values(self, key: str, epoch: int) -> Values:
        """measure -> seed -> the quantity at checkpoint ``epoch``."""
        return {m: {r["seed"]: value(r, key) for r in self.at(epoch, m)}
                for m in self.measures(epoch)}

    def fractions_removed(self, epoch: int, measure: str) -> dict[str, float]:
        """Weight name -> mean over seeds of the fraction of its filters removed (first convs)."""
        names: dict[str, list[float]] = {}
        for row in self.at(epoch, measure):
            removed = row.get("first_convs_removed")
            for name, fraction in (removed.items() if isinstance(removed, dict) else ()):
                if number(fraction) is not None:
                    names.setdefault(str(name), []).append(float(fraction))
        return {name: float(np.mean(fs)) for name, fs in names.items()}


def find(given: str | Path | None, run_paths: Sequence[str | Path]) -> list[Path]:
    """The interventions files: ``given`` (a file, or a folder holding interventions.jsonl),
    else any interventions.jsonl in the given run paths or their direct subfolders."""
    if given is not None:
        path = Path(given)
        if path.is_dir():
            path = path / FILE
        if not path.is_file():
            raise ConfigError(f"--interventions {given}: no {FILE} there; give the file fp "
                              "intervene wrote or its folder.")
        return [path]
    found: dict[Path, None] = {}
    for root in map(Path, run_paths):
        for candidate in [root / FILE, *sorted(root.glob(f"*/{FILE}"))]:
            if candidate.is_file():
                found.setdefault(candidate.resolve())
    return list(found)


def load(paths: Sequence[Path]) -> list[Group]:
    """The groups of every line of ``paths``, in the order their group first appears."""
    rows: dict[tuple, dict] = {}
    for path in paths:
        for row in read_jsonl(path):
            lacking = [k for k in REQUIRED if row.get(k) is None]
            if lacking:
                raise ConfigError(f"{path} has a line without {', '.join(lacking)}; every line "
                                  f"of {FILE} names its {', '.join(REQUIRED)}.")
            group = tuple(row.get(k) for k in GROUP_KEYS)
            key = (group, row["seed"], row["epoch"], str(row["measure"]))
            if key in rows and rows[key].get("run") != row.get("run"):
                raise ConfigError(f"{path}: dense runs {rows[key].get('run')} and {row.get('run')} "
                                  f"both give seed {row['seed']}, epoch {row['epoch']}, measure "
                                  f"{row['measure']} of one architecture, dataset and fraction; "
                                  "give the interventions of one study.")
            rows[key] = row
    groups: dict[tuple, list[dict]] = {}
    for (group, *_), row in rows.items():
        groups.setdefault(group, []).append(row)
    return [Group(members) for members in groups.values()]
