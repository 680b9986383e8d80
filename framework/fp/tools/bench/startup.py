"""How fast the command line answers: ``fp --help`` and ``fp list measures`` as fresh processes,
against a fresh ``python -c "import typer"`` (the least any typer command line can cost) timed in
the same run. Both bounds are walls a user feels (0.3 s and 2 s on 2 CPU cores, where importing
typer takes about 0.1 s); the targets are those walls as multiples of the typer baseline."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from fp.timing import Task, measure_ratio
from fp.tools.bench.rows import make_row

#: (row name, fp arguments, ratio target, the wall it stands for)
COMMANDS = (
    ("cli_help", ["--help"], "<= 3", "0.3 s"),
    ("cli_list_measures", ["list", "measures"], "<= 20", "2 s"),
)


def fp_command() -> list[str]:
    """The installed console script beside this interpreter, else the module."""
    script = Path(sys.executable).with_name("fp")
    return [str(script)] if script.exists() else [sys.executable, "-m", "fp.cli"]


def process(argv: list[str]) -> Task:
    return Task(lambda _: subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         stdin=subprocess.DEVNULL, check=True))


def cli_rows(repeats: int) -> list[dict[str, Any]]:
    """One row per command; each repetition is a whole process start, so the first-run costs of
    a cold disk cache are in the warm-up, not in the rows."""
    baseline = process([sys.executable, "-c", "import typer"])
    rows = []
    for name, args, target, wall in COMMANDS:
        timing = measure_ratio(process([*fp_command(), *args]), baseline, repeats=repeats,
                         device=torch.device("cpu"), balance=False)
        seconds = min(timing.measured)
        rows.append(make_row(name, timing, target, baseline='python -c "import typer"',
                             notes=f"`fp {' '.join(args)}` {seconds:.2f} s wall (bound {wall})"))
    return rows
