"""A prepared check for a short GPU slot (``bash benchmarks/gpu_check.sh``): the environment, a
NCCL group, data on the device, one prune event of each paper measure, and 2-3 epochs of the
paper's ResNet-56 protocol in fp32, bf16 + channels_last and compiled, extrapolated to 160
epochs (parts in ``check``). One JSON summary goes to stdout (and ``--out``/gpu_check.json),
progress to stderr. ``--dry-run`` runs the same functions on the CPU at tiny sizes, in seconds.

    PYTHONPATH=benchmarks python -m gpu_check.cli [--data cifar10.tar.gz] [--out DIR] [--dry-run]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tarfile
import threading
from pathlib import Path
from typing import Any

import torch

from .check import DRY, FULL, Check, log

#: seconds past the budget after which a part still running is abandoned and the report written
GRACE_S = 20.0


class UsageError(Exception):
    """A bad command line: one sentence, exit 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(f"{message} (see --help).")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(prog="benchmarks/gpu_check.sh", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, help="a tar.gz of {train,test}/<class>/*.jpg (CIFAR-10)")
    p.add_argument("--out", type=Path, help="a folder for gpu_check.json")
    p.add_argument("--dry-run", action="store_true", help="the same code on the CPU, tiny sizes")
    p.add_argument("--budget", type=float, help=f"seconds for the whole check (default "
                                                f"{FULL.budget_s:g}; dry run {DRY.budget_s:g})")
    p.add_argument("--epochs", type=int, help=f"epochs timed per variant (default {FULL.epochs}; "
                                              f"dry run {DRY.epochs})")
    p.add_argument("--compile", choices=("auto", "yes", "no"), default="auto",
                   help="time the compiled variant (auto: on the GPU when the budget allows)")
    args = p.parse_args(argv)
    if args.data is not None and not args.data.is_file():
        raise UsageError(f"--data {args.data} is not a file; give the path of a tar.gz of "
                         f"{{train,test}}/<class>/<image>.")
    if args.data is not None and not tarfile.is_tarfile(args.data):
        raise UsageError(f"--data {args.data} is not a tar archive.")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} exists and is not a folder.")
    if args.budget is not None and not args.budget > 0:
        raise UsageError(f"--budget {args.budget:g} must be a positive number of seconds.")
    if args.epochs is not None and args.epochs < 1:
        raise UsageError(f"--epochs {args.epochs} must be at least 1.")
    if not args.dry_run and not torch.cuda.is_available():
        raise UsageError(f"no CUDA GPU is visible to torch {torch.__version__} here; run with "
                         f"--dry-run for the CPU rehearsal.")
    return args


def emit(report: dict[str, Any], out: Path | None, fd: int) -> None:
    text = json.dumps(report, indent=2, default=str) + "\n"
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_check.json").write_text(text)
    os.write(fd, text.encode())


def snapshot(report: dict[str, Any]) -> dict[str, Any]:
    """A copy of a report that another thread may be adding to."""
    for _ in range(10):
        try:
            return json.loads(json.dumps(report, default=str))
        except RuntimeError:  # it changed size while being copied
            continue
    return {"summary": report.get("summary", {}), "parts": "changing too fast to copy"}


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when every part is ok, 1 when one failed, 2 for a bad command line."""
    try:
        args = parse_args(argv)
    except UsageError as exc:
        log(str(exc))
        return 2
    sys.stdout.flush()
    stdout = os.dup(1)
    os.dup2(2, 1)  # what the parts print (compilers, NCCL) goes to stderr: stdout is the JSON
    once = threading.Lock()
    with contextlib.ExitStack() as stack:
        check = Check(DRY if args.dry_run else FULL, stack, data=args.data, epochs=args.epochs,
                      budget=args.budget, compile=args.compile)

        def overtime() -> None:  # a part stuck past the budget: report what is known, and end
            if once.acquire(blocking=False):
                check.report["summary"] = {**check.summary(), "ok": False,
                                           "stopped": "the time budget ran out inside a part"}
                emit(snapshot(check.report), args.out, stdout)
                os._exit(1)

        watchdog = threading.Timer(check.left() + GRACE_S, overtime)
        watchdog.daemon = True
        watchdog.start()
        report = check.run()
        watchdog.cancel()
        if not once.acquire(blocking=False):
            return 1  # the watchdog is writing its report
        emit(report, args.out, stdout)
    return 0 if report["summary"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
