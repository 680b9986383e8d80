"""Records of finished runs for ``fp report``: each run directory's summary.json and metrics.jsonl,
and runs grouped into configurations (their seeds averaged)."""
from __future__ import annotations

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
    evals: list[dict] = field(default_factory=list)   # "eval_set": L_V, accuracy, ‖g‖² on V

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


def find_run_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Every folder with a summary.json among ``paths`` and their direct subfolders, once each."""
    found: dict[Path, None] = {}
    for path in map(Path, paths):
        if not path.exists():
            raise ConfigError(f"{path} does not exist; give run directories or sweep folders.")
        if not path.is_dir():
            raise ConfigError(f"{path} is a file, not a directory; give run directories or "
                              "sweep folders.")
        candidates = [path] if (path / "summary.json").is_file() else sorted(path.iterdir())
        for candidate in candidates:
            if (candidate / "summary.json").is_file():
                found.setdefault(candidate.resolve())
    if not found:
        names = ", ".join(str(p) for p in paths) or "(no paths given)"
        raise ConfigError(f"no run directories (with summary.json) under {names}.")
    return list(found)


def check_out(out: Path, run_dirs: Sequence[Path]) -> None:
    """The report goes beside the runs, never into one of them."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory; give a folder for the report.")
    target = out.resolve()
    for run_dir in run_dirs:
        if target == run_dir or run_dir in target.parents:
            raise ConfigError(f"--out {out} is inside the run directory {run_dir}; give a folder "
                              "outside the runs.")


def load_run(path: Path) -> RunRecord:
    summary_path = path / "summary.json"
    try:
        summary = json.loads(summary_path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{summary_path} is not valid JSON (line {exc.lineno}: {exc.msg}).") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{summary_path} is not valid JSON (not UTF-8 text).") from None
    if not isinstance(summary, dict):
        raise ConfigError(f"{summary_path} does not hold a JSON object.")
    record = RunRecord(path, summary)
    kinds = {"epoch": record.epochs, "prune": record.prunes, "flow": record.flows,
             "eval_set": record.evals}
    for entry in read_jsonl(path / "metrics.jsonl"):
        kinds.get(entry.get("event"), []).append(entry)
    return record


def read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of ``path``. A last line without its newline is a write cut short by a
    crash and is skipped; any other line that is not JSON is an error naming it."""
    if not path.exists():
        return []
    if not path.is_file():
        raise ConfigError(f"{path} is not a file; a run's metrics.jsonl holds one JSON object per line.")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not valid JSON lines (not UTF-8 text).") from None
    lines = text.split("\n")
    entries = []
    for number_, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            if number_ == len(lines):  # no newline after it: cut short
                continue
            raise ConfigError(f"{path} line {number_} is not valid JSON ({exc.msg}).") from None
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
