"""The time plan: what each part of the GPU check may spend, so that the default run of
``bash benchmarks/gpu_check.sh`` ends inside a 6-minute slot and ``--mode layout`` inside 2,
start-up included.

A run's wall time is at most STARTUP_S (the script's checks, Python and ``import torch``, before
the check's clock starts) + its budget (the parts, in order) + GRACE_S (a part still running when
the budget is spent is abandoned and the report written) + EXIT_S (temporary folders removed, CUDA
and the compiler's workers shut down). A start-up that took longer than its allowance is taken off
the budget (``Plan``), so that sum holds whatever the start-up took.

Each part is given a deadline that leaves every later part its own budget: what an earlier part
did not use goes to the next, and a part that overran shortens the ones after it, which adapt
(training times fewer epochs, the TF32 comparison of a measure is skipped, the process group
waits less).
"""
from __future__ import annotations

import time

#: the slots the two modes must fit, start-up included (seconds)
SLOT_S = {"check": 360.0, "layout": 120.0}
#: before the check's clock starts: bash's checks (a second), Python, ``import torch`` (seconds on
#: a cold disk), ``import fp``; an offline ``pip install -e .`` of the checkout where it is needed
STARTUP_S = 25.0
#: past the budget, a part still running is abandoned and the report written (cli's watchdog)
GRACE_S = 10.0
#: after the report: temporary folders (an unpacked CIFAR-10 is 60,000 files) and the process's
#: CUDA context and compile workers going away
EXIT_S = 10.0

#: the default check, in the order its parts run (seconds each)
CHECK_PARTS = {
    "environment": 10.0,              # CUDA initialised, the GPU's properties
    "process_group": 25.0,            # a fresh process: import torch, NCCL up, one all_reduce
    "data": 30.0,                     # a CIFAR-10 archive unpacked (synthetic data: nothing)
    "on_device_data": 25.0,           # the experiment built: data decoded and put on the GPU
    "scoring": 50.0,                  # one prune event per paper measure, each scored again in TF32
    "tf32_training": 10.0,            # paired fp32 training steps with TF32 off and on
    "protocol": 5.0,                  # the protocol read from the gin files
    "train_fp32": 60.0,               # 2-3 epochs in fp32
    "train_amp_channels_last": 50.0,  # 2-3 epochs in bf16 + channels_last
    "compile": 5.0,                   # the comparison and the verdict
}
#: the compiled variant, opt-in (``--compile yes``): its own budget, added to the default one;
#: a model's first compile and each recompile after a prune event are Inductor compiles of
#: forward and backward (tens of seconds each on a GPU)
COMPILE_PART = {"train_amp_channels_last_compile": 210.0}
#: ``--mode layout``, in order (seconds each)
LAYOUT_PARTS = {
    "environment": 5.0,
    "layout_build": 12.0,   # the experiment built, one real prune event
    "layout_steps": 13.0,   # 2 x 100 training steps, paired
    "recompile": 35.0,      # torch.compile afresh on the pruned model, to its first step done
}


def with_compile(parts: dict[str, float]) -> dict[str, float]:
    """The check's parts with the compiled variant in its place: after the other trainings,
    before the comparison."""
    order = list(parts)
    at = order.index("compile")
    return {**{k: parts[k] for k in order[:at]}, **COMPILE_PART,
            **{k: parts[k] for k in order[at:]}}


def worst_case_s(budget_s: float) -> float:
    """The longest a run with this budget can take, start-up to exit."""
    return STARTUP_S + budget_s + GRACE_S + EXIT_S


class Plan:
    """The parts' budgets (scaled to ``total_s`` when one is given), the check's end, and each
    part's deadline. The clock starts at construction; ``startup_s`` (None: unknown) beyond
    STARTUP_S is taken off the end."""

    def __init__(self, parts: dict[str, float], total_s: float | None = None,
                 startup_s: float | None = None):
        scale = total_s / sum(parts.values()) if total_s else 1.0
        self.parts = {name: seconds * scale for name, seconds in parts.items()}
        self.budget_s = sum(self.parts.values())
        self.startup_s = startup_s
        self.startup_excess_s = max(0.0, (startup_s or 0.0) - STARTUP_S)
        self.start = time.perf_counter()
        self.end = self.start + self.budget_s - self.startup_excess_s

    def left(self) -> float:
        return self.end - time.perf_counter()

    def deadline(self, name: str) -> float:
        """When ``name`` must be done for every part after it to get its budget (the end, for a
        part outside the plan)."""
        if name not in self.parts:
            return self.end
        later = list(self.parts)[list(self.parts).index(name) + 1:]
        return self.end - sum(self.parts[p] for p in later)

    def report(self, slot_s: float, took: dict[str, float]) -> dict:
        """The plan and what each part took, for the JSON summary."""
        return {"slot_s": slot_s, "startup_allowance_s": STARTUP_S,
                "startup_s": None if self.startup_s is None else round(self.startup_s, 2),
                "budget_s": round(self.budget_s, 1),
                "taken_off_for_a_slow_startup_s": round(self.startup_excess_s, 2),
                "grace_s": GRACE_S, "exit_allowance_s": EXIT_S,
                "worst_case_s": round(worst_case_s(self.budget_s), 1),
                "fits_slot": worst_case_s(self.budget_s) <= slot_s,
                "check_s": round(time.perf_counter() - self.start, 2),
                "parts": {name: {"budget_s": round(self.parts.get(name, 0.0), 1),
                                 "took_s": took.get(name)} for name in {**self.parts, **took}}}
