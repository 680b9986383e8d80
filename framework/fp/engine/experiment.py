"""``fp run``'s entry: parse the experiment, find a finished run or take the run directory's lock,
build (or resume) it and hand it to the Trainer."""
from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Sequence

from fp import config
from fp.engine import rundir
from fp.engine.build import build_setup
from fp.engine.outcome import Outcome
from fp.engine.runlock import RunLock
from fp.engine.trainer import Trainer
from fp.errors import ConfigError
from fp.manager import Manager, make_manager


def run_experiment(files: Sequence[str], bindings: Sequence[str] = (), *,
                   out: str | Path | None = None, device: str | None = None, force: bool = False,
                   manager: Manager | None = None, rank: int = 0, world_size: int = 1,
                   quiet: bool = False) -> Outcome:
    """Run (or resume, or report finished) the experiment declared by ``files`` + ``bindings``."""
    manager = manager or make_manager()
    manager.require_healthy()
    settings = config.parse(files, bindings, manager)
    if device:
        settings.experiment.device = device
    out_dir = Path(out) if out else default_out_dir(files, config.config_text())
    check_out_dir(out_dir, config.config_text(), force)
    finished = finished_outcome(out_dir, force)  # before the lock: a finished run is not touched
    if finished:
        return finished
    with RunLock(out_dir) if rank == 0 else contextlib.nullcontext():  # rank 0 locks for all
        finished = finished_outcome(out_dir, force) if rank == 0 else None  # done since the check
        if finished:
            return finished
        setup = build_setup(settings, manager, out_dir, rank, world_size)
        return Trainer(setup, quiet=quiet).fit()


def finished_outcome(out_dir: Path, force: bool) -> Outcome | None:
    """The outcome of a run directory that holds a finished run (unless ``force``)."""
    if (out_dir / "summary.json").exists() and not force:
        return Outcome(out_dir, rundir.read_summary(out_dir), already_finished=True)
    return None


def default_out_dir(files: Sequence[str], text: str) -> Path:
    stem = Path(files[-1]).stem if files else "run"
    return Path("runs") / f"{stem}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def check_out_dir(out_dir: Path, text: str, force: bool) -> None:
    """Refuse to mix a run directory with a different experiment unless forced."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} exists and is not a directory.")
    saved = out_dir / "config.gin"
    if saved.exists() and not force and saved.read_text() != text:
        raise ConfigError(f"{out_dir} holds a run with a different config; use another --out, or "
                          f"--force to continue it with the new config.")
