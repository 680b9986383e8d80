"""report.md and report.csv of ``fp report``: one row per configuration, seeds averaged."""
from __future__ import annotations

import csv
from pathlib import Path

from fp.tools.report.records import GROUP_KEYS, SHOWN_KEYS, Config


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
             "accuracies are mean ± std over seeds; final is the last epoch's test accuracy, best "
             "the highest of any epoch (the paper's code reports its best checkpoint).", "",
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
