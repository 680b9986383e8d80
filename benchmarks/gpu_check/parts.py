"""What both modes of the GPU check share: parts run in order inside a ``budget.Plan``, each
wrapped so that a failing part records ``{"ok": false, "error": ...}`` and the rest still run,
each recording its budget and the seconds it took; the report they fill; progress on stderr."""
from __future__ import annotations

import sys
import time
import traceback
from typing import Any, Callable

import torch

from . import monitor
from .budget import SLOT_S, Plan
from .sizes import Sizes


def log(message: str) -> None:
    print(f"gpu_check: {message}", file=sys.stderr, flush=True)


class Parts:
    """A mode of the check: its parts in order (``run``, in a subclass), the plan they share and
    the report they fill."""

    mode = ""  # a key of budget.SLOT_S

    def __init__(self, sizes: Sizes, plan: Plan):
        self.sizes, self.plan = sizes, plan
        self.device = torch.device(sizes.device)
        self.report: dict[str, Any] = {"summary": {}, "parts": {}}
        self.running: tuple[str, float] | None = None  # the part under way and its start

    def left(self) -> float:
        return self.plan.left()

    def deadline(self, name: str) -> float:
        return self.plan.deadline(name)

    def part(self, name: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        log(f"{name} ({self.left():.0f} s of the budget left, "
            f"{self.plan.parts.get(name, 0.0):.0f} s its own)")
        self.report["parts"][name] = found = {"ok": False, "error": "still running",
                                              "budget_s": round(self.plan.parts.get(name, 0.0), 1)}
        monitor.reset_peak(self.device)
        start = time.perf_counter()
        self.running = (name, start)
        try:
            found.update({"ok": True, "error": None, **work()})
        except Exception as exc:  # noqa: BLE001 - one failing part must not stop the others
            found["error"] = monitor.error_text(exc)
            log(f"{name} failed: {found['error']}")
            traceback.print_exc(file=sys.stderr)  # the whole story for the log, one line in JSON
        self.running = None
        if found["error"] is None:
            del found["error"]
        found.update(part_s=round(time.perf_counter() - start, 3),
                     peak_gpu_memory=monitor.peak_memory(self.device))
        return found

    def skip(self, name: str, reason: str) -> dict[str, Any]:
        self.report["parts"][name] = found = {"ok": True, "skipped": reason}
        return found

    def took(self) -> dict[str, float]:
        """Seconds per part so far; a part still running counts until now."""
        found = {name: p["part_s"] for name, p in self.report["parts"].items() if "part_s" in p}
        if self.running is not None:
            name, start = self.running
            found[name] = round(time.perf_counter() - start, 3)
        return found

    def time_report(self) -> dict[str, Any]:
        return self.plan.report(SLOT_S[self.mode], self.took())

    def common_summary(self) -> dict[str, Any]:
        found = self.report["parts"]
        return {"ok": all(p.get("ok") for p in found.values()),
                "failed": [n for n, p in found.items() if not p.get("ok")],
                "mode": self.mode, "dry_run": self.device.type != "cuda",
                "device": str(self.device),
                "gpu": found.get("environment", {}).get("gpu", {}).get("name")}

    def summary(self) -> dict[str, Any]:
        raise NotImplementedError

    def overtime(self) -> dict[str, Any]:
        """The report when the budget and its grace ran out inside a part: that part says how
        long it had run."""
        if self.running is not None:
            name, start = self.running
            self.report["parts"][name].update(
                ok=False, part_s=round(time.perf_counter() - start, 3),
                error=f"still running when the budget ran out, after "
                      f"{time.perf_counter() - start:.0f} s")
        return {**self.summary(), "ok": False,
                "stopped": "the time budget ran out inside a part"}

    def run(self) -> dict[str, Any]:
        raise NotImplementedError
