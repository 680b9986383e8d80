"""``fp bench``'s rows: a ratio timed side by side (``fp.timing.measure_ratio``) checked against
its target, as plain JSON data."""
from __future__ import annotations

from typing import Any

from fp.timing import PairedTimes


def meets(ratio: float, target: str) -> bool:
    """``target`` is "<= x" or ">= x"."""
    op, bound = target.split()
    return ratio <= float(bound) if op == "<=" else ratio >= float(bound)


def make_row(name: str, timing: PairedTimes, target: str, *, baseline: str, speedup: bool = False,
             notes: str = "") -> dict[str, Any]:
    """One benchmark result as plain JSON data. ``ratio`` is measured/baseline time, or
    baseline/measured (a speed-up, ``ratio_is`` says which), the median over pairs; times are
    each side's fastest repetition in seconds, and ``runs_s`` keeps every repetition."""
    ratio = timing.ratio(speedup)
    return {
        "name": name, "ratio": round(ratio, 4), "target": target, "ok": meets(ratio, target),
        "ratio_is": "baseline/measured time" if speedup else "measured/baseline time",
        "measured_s": round(min(timing.measured), 6),
        "baseline_s": round(min(timing.baseline), 6),
        "baseline": baseline, "notes": notes,
        "runs_s": {"measured": [round(t, 6) for t in timing.measured],
                   "baseline": [round(t, 6) for t in timing.baseline]},
    }


def skipped_row(name: str, target: str, *, baseline: str, notes: str) -> dict[str, Any]:
    """A row that does not apply on this device: kept in the output, so its absence is explained."""
    return {"name": name, "ratio": None, "target": target, "ok": True, "skipped": True,
            "ratio_is": None, "measured_s": None, "baseline_s": None, "baseline": baseline,
            "notes": notes, "runs_s": {"measured": [], "baseline": []}}
