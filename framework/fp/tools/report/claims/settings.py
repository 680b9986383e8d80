"""Full runs grouped into settings: runs that agree on every grouping key but the measure (the
capacity-matched arm, target_type = "params", is a setting of its own), and their per-seed
values of a quantity, paired by experiment.seed."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from fp.tools.report.claims.comparisons import Comparison, Values, cell, percent
from fp.tools.report.records import GROUP_KEYS, Config, RunRecord, number

#: the arm a setting's target_type puts it in (docs/claims.md, claim (i))
ARMS = {"filters": "filter-count arm", "params": "capacity-matched arm"}


@dataclass
class Setting:
    configs: list[Config]

    @property
    def title(self) -> str:
        summary = self.configs[0].summary
        return ", ".join(f"{k} {summary.get(k)}" for k in GROUP_KEYS
                         if k != "measure" and summary.get(k) is not None)

    @property
    def arm(self) -> str:
        target_type = self.configs[0].summary.get("target_type")
        return ARMS.get(target_type, f"target_type {target_type}")

    def measures(self, first: Sequence[str] = ()) -> list[str]:
        """The measures of the setting, ``first`` (where present) leading."""
        found = sorted(str(c.summary.get("measure")) for c in self.configs)
        return list(dict.fromkeys([m for m in first if m in found] + found))

    def runs(self, measure: str) -> list[RunRecord]:
        return [r for c in self.configs if str(c.summary.get("measure")) == measure for r in c.runs]

    def values(self, of_run: Callable[[RunRecord], object]) -> Values:
        """measure -> seed -> the quantity; runs without a seed cannot pair and are left out."""
        return {m: {r.summary["seed"]: of_run(r) for r in self.runs(m)
                    if r.summary.get("seed") is not None} for m in self.measures()}

    def kept(self, measure: str, what: str) -> float | None:
        """Mean percentage of the dense model's params or flops kept by the measure's runs."""
        config = next((c for c in self.configs if str(c.summary.get("measure")) == measure), None)
        return None if config is None else config.kept_percent(what)


def settings_of(configs: Sequence[Config]) -> list[Setting]:
    """Configurations grouped by everything but the measure, in the configurations' order.
    Dense runs (target 0, such as the interventions' checkpoint runs) prune nothing, so no
    measure acts in them: they form no setting."""
    groups: dict[tuple, list[Config]] = {}
    for config in configs:
        if not config.summary.get("target"):
            continue
        groups.setdefault(tuple(config.summary.get(k) for k in GROUP_KEYS if k != "measure"),
                          []).append(config)
    return [Setting(members) for members in groups.values()]


def accuracy(key: str) -> Callable[[RunRecord], float | None]:
    """The per-run quantity "summary[key] in percent" (test_acc: final, best_test_acc: best)."""
    def of_run(run: RunRecord) -> float | None:
        value = number(run.summary.get(key))
        return None if value is None else 100 * value
    return of_run


def kept_columns(setting: Setting) -> tuple[list[str], Callable[[Comparison], list[str]]]:
    """The columns a comparison of full runs shows beside its numbers: params and FLOPs kept
    (percent of the dense model) by its two measures."""
    def cells(c: Comparison) -> list[str]:
        return [f"{percent(setting.kept(c.result.low, what))} / "
                f"{percent(setting.kept(c.result.high, what))}" for what in ("params", "flops")]
    return ["params kept (left / right)", "FLOPs kept (left / right)"], cells


def measure_table(setting: Setting, columns: dict[str, Callable[[list[RunRecord]], str]],
                  first: Sequence[str] = ()) -> list[str]:
    """One row per measure: its seeds, params and FLOPs kept, then ``columns`` of its runs."""
    header = ["measure", "seeds", "params kept", "FLOPs kept", *columns]
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    for measure in setting.measures(first):
        runs = setting.runs(measure)
        cells = [measure, str(len(runs)), percent(setting.kept(measure, "params")),
                 percent(setting.kept(measure, "flops")), *(f(runs) for f in columns.values())]
        lines.append("| " + " | ".join(cell(c) for c in cells) + " |")
    return lines + [""]
