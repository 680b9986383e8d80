"""A prepared check for a short GPU slot (``bash benchmarks/gpu_check.sh``), in two modes.

The default (``--mode check``, at most 6 minutes, start-up included): the environment, a NCCL
group, data on the device, one prune event of each paper measure (its ranking scored again with
TF32 allowed: rank correlation and changed decisions), paired training steps with TF32 off and
on, and 2-3 epochs of the paper's ResNet-56 protocol in fp32 and in bf16 + channels_last,
extrapolated to 160 epochs. ``--compile yes`` adds the compiled variant with its own budget
(3.5 minutes more), counted as the compiles the protocol would do. ``--mode layout`` (at most 2
minutes): training steps of a pruned model with channels-last kept through surgery against the
contiguous tensors torch-pruning leaves, and one post-prune recompile (``layout``). One JSON
summary goes to stdout (and ``--out``/gpu_check.json), progress to stderr. ``--dry-run`` runs
either mode's code on the CPU at tiny sizes (compiling with the eager backend).

    PYTHONPATH=benchmarks python -m gpu_check.cli [--mode check|layout] [--data cifar10.tar.gz]
        [--out DIR] [--dry-run] [--compile auto|yes|no] [--budget S] [--epochs N]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from .budget import CHECK_PARTS, GRACE_S, LAYOUT_PARTS
from .check import Check
from .layout import Layout
from .parts import Parts, log
from .sizes import DRY, FULL, Sizes

#: set by benchmarks/gpu_check.sh to its start (seconds since the epoch): the start-up is timed
STARTED_ENV = "FP_GPU_CHECK_STARTED"
#: options that only the default mode reads
CHECK_ONLY = ("data", "epochs", "compile")


class UsageError(Exception):
    """A bad command line: one sentence, exit 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(f"{message} (see --help).")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(prog="benchmarks/gpu_check.sh", description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=tuple(MODES), default="check",
                   help="check: the default check (<= 6 min); layout: channels-last kept through "
                        "surgery against contiguous, and a post-prune recompile (<= 2 min)")
    p.add_argument("--data", type=Path, help="a tar.gz of {train,test}/<class>/*.jpg (CIFAR-10)")
    p.add_argument("--out", type=Path, help="a folder for gpu_check.json")
    p.add_argument("--dry-run", action="store_true", help="the same code on the CPU, tiny sizes")
    p.add_argument("--budget", type=float, help=f"seconds for the parts (default: check "
                                                f"{sum(CHECK_PARTS.values()):g}, layout "
                                                f"{sum(LAYOUT_PARTS.values()):g})")
    p.add_argument("--epochs", type=int, help=f"epochs timed per variant (default {FULL.epochs}; "
                                              f"dry run {DRY.epochs})")
    p.add_argument("--compile", choices=("auto", "yes", "no"),
                   help="time the compiled variant (auto: opt-in on the GPU, rehearsed with the "
                        "eager backend in the dry run; yes adds its own budget)")
    args = p.parse_args(argv)
    given = [f"--{name}" for name in CHECK_ONLY if getattr(args, name) is not None]
    if args.mode != "check" and given:
        raise UsageError(f"{', '.join(given)} applies to --mode check only, not --mode "
                         f"{args.mode}.")
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


def startup_s() -> float | None:
    """Seconds since benchmarks/gpu_check.sh started (None when it did not say)."""
    try:
        return max(0.0, time.time() - float(os.environ[STARTED_ENV]))
    except (KeyError, ValueError):
        return None


def check_mode(args: argparse.Namespace, sizes: Sizes, stack: contextlib.ExitStack,
               started: float | None) -> Parts:
    return Check(sizes, stack, data=args.data, epochs=args.epochs, budget=args.budget,
                 compile=args.compile or "auto", startup_s=started)


def layout_mode(args: argparse.Namespace, sizes: Sizes, stack: contextlib.ExitStack,
                started: float | None) -> Parts:
    return Layout(sizes, stack, budget=args.budget, startup_s=started)


#: --mode's choices: what builds each mode's parts
MODES = {"check": check_mode, "layout": layout_mode}


def make(args: argparse.Namespace, stack: contextlib.ExitStack) -> Parts:
    """The mode's parts, sized for the GPU or the dry run, their clock started."""
    return MODES[args.mode](args, DRY if args.dry_run else FULL, stack, startup_s())


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
        check = make(args, stack)

        def overtime() -> None:  # a part stuck past the budget: report what is known, and end
            if once.acquire(blocking=False):
                check.report["summary"] = check.overtime()
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
