"""``fp report``: one table row per configuration (its seeds averaged) and the figures, from the
run directories of ``fp run`` / ``fp sweep`` (their summary.json and metrics.jsonl)."""
from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fp.errors import ConfigError

#: runs that agree on all of these (and differ only in the seed) form one configuration
GROUP_KEYS = ("measure", "architecture", "dataset", "target", "target_type", "granularity",
              "schedule", "rounds", "epochs")
#: the columns report.md always shows; other group keys are shown only where configurations differ
SHOWN_KEYS = ("measure", "architecture", "dataset", "target")


def number(value: Any) -> float | None:
    """A finite float, or None for anything missing or not numeric."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


@dataclass
class RunRecord:
    """One run directory: its summary and its metrics.jsonl records by event kind."""

    path: Path
    summary: dict[str, Any]
    epochs: list[dict] = field(default_factory=list)
    prunes: list[dict] = field(default_factory=list)
    flows: list[dict] = field(default_factory=list)

    @property
    def key(self) -> tuple:
        return tuple(self.summary.get(k) for k in GROUP_KEYS)


@dataclass
class Config:
    """The runs of one configuration (differing only in their seed) and its label in figures."""

    runs: list[RunRecord]
    label: str = ""

    @property
    def summary(self) -> dict[str, Any]:
        return self.runs[0].summary

    def stat(self, key: str) -> tuple[float | None, float | None]:
        """Mean and sample std (ddof=1; None for one seed) of a summary fraction, in percent."""
        values = [v for v in (number(r.summary.get(key)) for r in self.runs) if v is not None]
        if not values:
            return None, None
        std = 100 * float(np.std(values, ddof=1)) if len(values) > 1 else None
        return 100 * float(np.mean(values)), std

    def kept_percent(self, what: str) -> float | None:
        """Mean percentage of the dense model's params, flops or filters kept."""
        key, dense = ("filters_kept", "dense_filters") if what == "filters" else (what, f"dense_{what}")
        ratios = [number(r.summary.get(key)) / number(r.summary.get(dense)) for r in self.runs
                  if number(r.summary.get(key)) is not None and number(r.summary.get(dense))]
        return 100 * float(np.mean(ratios)) if ratios else None

    def row(self) -> dict[str, Any]:
        test, best = self.stat("test_acc"), self.stat("best_test_acc")
        times = [v for v in (number(r.summary.get("wall_time_s")) for r in self.runs) if v is not None]
        return {**{k: self.summary.get(k) for k in GROUP_KEYS},
                "test_acc_mean": test[0], "test_acc_std": test[1],
                "best_test_acc_mean": best[0], "best_test_acc_std": best[1],
                "params_kept_pct": self.kept_percent("params"),
                "flops_kept_pct": self.kept_percent("flops"),
                "filters_kept_pct": self.kept_percent("filters"),
                "wall_time_s_mean": float(np.mean(times)) if times else None,
                "seeds": len(self.runs)}


def report(run_dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Write report.md, report.csv and the PNG figures into ``out``; returns report.md's path.
    ``run_dirs`` are run directories or folders of them (a sweep's ``--out``)."""
    from fp import plots  # matplotlib is imported only when a report is drawn

    configs = group_runs([load_run(path) for path in find_run_dirs(run_dirs)])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [config.row() for config in configs]
    write_csv(rows, out / "report.csv")
    figures = plots.draw_all(configs, out)
    path = out / "report.md"
    path.write_text(markdown(rows, figures, configs))
    return path


def find_run_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Every folder with a summary.json among ``paths`` and their direct subfolders, once each."""
    found: dict[Path, None] = {}
    for path in map(Path, paths):
        if not path.is_dir():
            raise ConfigError(f"{path} is not a directory; give run directories or sweep folders.")
        candidates = [path] if (path / "summary.json").is_file() else sorted(path.iterdir())
        for candidate in candidates:
            if (candidate / "summary.json").is_file():
                found.setdefault(candidate.resolve())
    if not found:
        names = ", ".join(str(p) for p in paths) or "(no paths given)"
        raise ConfigError(f"no run directories (with summary.json) under {names}.")
    return list(found)


def load_run(path: Path) -> RunRecord:
    try:
        summary = json.loads((path / "summary.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path / 'summary.json'} is not valid JSON ({exc}).") from None
    record = RunRecord(path, summary if isinstance(summary, dict) else {})
    kinds = {"epoch": record.epochs, "prune": record.prunes, "flow": record.flows}
    for entry in read_jsonl(path / "metrics.jsonl"):
        kinds.get(entry.get("event"), []).append(entry)
    return record


def read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of ``path``; a line cut short by a crash is skipped."""
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def group_runs(runs: Sequence[RunRecord]) -> list[Config]:
    """Configurations sorted by architecture, dataset, target and measure, each labelled by its
    measure plus whatever else differs between configurations."""
    by_key: dict[tuple, list[RunRecord]] = defaultdict(list)
    for run in runs:
        by_key[run.key].append(run)
    configs = [Config(sorted(members, key=lambda r: str(r.summary.get("seed"))))
               for _, members in sorted(by_key.items(), key=lambda item: sort_key(item[0]))]
    varying = [k for k in GROUP_KEYS[1:] if len({c.summary.get(k) for c in configs}) > 1]
    for config in configs:
        extra = " ".join(f"{k}={config.summary.get(k)}" for k in varying)
        config.label = f"{config.summary.get('measure', '?')} {extra}".strip()
    return configs


def sort_key(key: tuple) -> tuple:
    values = dict(zip(GROUP_KEYS, key))
    order = ("architecture", "dataset", "target", "measure") + GROUP_KEYS
    return tuple((v is None, str(v) if number(v) is None else f"{v:020.6f}")
                 for v in (values[k] for k in order))


def write_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([{k: "" if v is None else v for k, v in row.items()} for row in rows])


def markdown(rows: list[dict], figures: list[Path], configs: list[Config]) -> str:
    keys = list(SHOWN_KEYS) + [k for k in GROUP_KEYS
                               if k not in SHOWN_KEYS and len({r[k] for r in rows}) > 1]
    header = keys + ["final test acc (%)", "best test acc (%)", "params kept", "FLOPs kept",
                     "filters kept", "wall time", "seeds"]
    lines = ["# flowprune report", "",
             f"{sum(len(c.runs) for c in configs)} runs in {len(configs)} configurations; "
             "accuracies are mean ± std over seeds.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(row[k]) for k in keys] + [
            mean_std(row["test_acc_mean"], row["test_acc_std"]),
            mean_std(row["best_test_acc_mean"], row["best_test_acc_std"]),
            fmt(row["params_kept_pct"], "%"), fmt(row["flops_kept_pct"], "%"),
            fmt(row["filters_kept_pct"], "%"), fmt(row["wall_time_s_mean"], " s", 0),
            str(row["seeds"])]
        lines.append("| " + " | ".join(cells) + " |")
    for figure in figures:
        lines += ["", f"![{figure.stem.replace('_', ' ')}]({figure.name})"]
    return "\n".join(lines) + "\n"


def mean_std(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "–"
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"


def fmt(value: float | None, unit: str, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}{unit}"
