"""``interventions.jsonl``: one JSON line per (run, seed, checkpoint epoch, measure, fraction),
appended as each is measured, so an interrupted call resumes where it stopped; and the short
summary table ``fp intervene`` prints."""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from fp.errors import DataError

FILE = "interventions.jsonl"

#: what tells two records apart: a line with the same values is not measured again
KEY = ("run", "seed", "epoch", "measure", "fraction")

#: the summary table: (header, record field), means over the runs of an (epoch, measure)
COLUMNS = (("|ΔL_V| zeroed", "abs_change_zeroed"), ("|ΔL_V| removed", "abs_change_removed"),
           ("predicted ΔL removed", "predicted_removed"), ("Θᵀg change", "theta_g_rel_change"),
           ("log ||g||² ratio (measure T)", "log_grad_ratio_measure_t"),
           ("log ||g||² ratio (train T)", "log_grad_ratio_train_t"))
HEADERS = ("epoch", "measure", "runs", *(header for header, _ in COLUMNS))


def key_of(record: dict[str, Any]) -> tuple:
    return tuple(record[k] for k in KEY)


def read_records(out_dir: Path) -> list[dict[str, Any]]:
    """The records already written; a last line cut short by a crash is dropped from the file."""
    path = out_dir / FILE
    if not path.exists():
        return []
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
        path.write_text(text)
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            key_of(record)
        except (ValueError, KeyError, TypeError):
            raise DataError(f"{path}, line {number}, is not an intervention record; move the "
                            f"file away or use another --out.") from None
        found.append(record)
    return found


def append_record(out_dir: Path, record: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / FILE).open("a") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()


def summary_rows(records: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """One row per (epoch, measure): the mean of each column over its runs."""
    groups: dict[tuple[int, str], list[dict]] = defaultdict(list)
    for record in records:
        groups[(record["epoch"], record["measure"])].append(record)
    rows = []
    for (epoch, measure), group in sorted(groups.items()):
        means = [_mean([r[field] for r in group]) for _, field in COLUMNS]
        rows.append((str(epoch), measure, str(len(group)), *(f"{m:.4g}" for m in means)))
    return rows


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")
