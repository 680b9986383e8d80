"""``fp sweep``: one experiment run for every point of a grid of gin bindings.

Each point runs into ``OUT/<run name>``; the name is readable and ends in a hash of the bindings,
so re-running the same sweep finds its finished runs and skips them (a sweep resumes). Points run
one after another in this process, or as separate processes through submitit: ``jobs`` at once
on this machine, or as Slurm jobs (``fp.tools.sweep.jobs``).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Sequence

from rich.table import Table
from rich.text import Text

from fp.config import cluster, parse as parse_config
from fp.engine import rundir
from fp.engine.experiment import run_experiment
from fp.errors import ConfigError, FpError, RegistryError
from fp.manager import make_manager
from fp.tools.sweep.grid import check_no_overlap, expand_grid, run_name
from fp.tools.sweep.record import record_sweep
from fp.validation import check_fields

#: what each row of a sweep reports
ROW_KEYS = ("name", "bindings", "status", "test_acc", "best_test_acc", "filters_kept_frac",
            "wall_time_s", "error", "out_dir", "job_id", "started", "ended")
EXECUTORS = ("local", "slurm")


def sweep(config: str | Path | Sequence[str | Path], grid: Sequence[str], *,
          bindings: Sequence[str] = (), out: str | Path, device: str | None = None,
          jobs: int | None = None, executor: str = "local", gpus_per_run: int | None = None,
          slurm: dict[str, Any] | None = None, runner: Callable[..., Any] = run_experiment,
          on_update: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Run ``config`` once per grid point into ``out/<run_name>``, skipping finished runs; a run
    that fails is recorded as failed and the sweep goes on. ``executor="local"`` with ``jobs``
    None or 1 runs the points here, one after another, through ``runner``; ``jobs=N`` runs N at
    once in their own processes, each with ``gpus_per_run`` GPUs of this machine; ``"slurm"``
    submits one job per point (``jobs`` at once, None: all), with the ``slurm`` gin block's
    options overridden by ``slurm`` ({field: value}). ``on_update(rows)`` is called whenever a
    point changes state. Returns one row per grid point (see ROW_KEYS)."""
    files = [str(config)] if isinstance(config, (str, Path)) else [str(c) for c in config]
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor {executor!r} must be one of {', '.join(EXECUTORS)}.")
    if Path(out).exists() and not Path(out).is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory.")
    points = expand_grid(grid)
    check_no_overlap(grid, bindings)
    prefix = Path(files[-1]).stem if files else "run"
    rows = [new_row(point, run_name([*point, *bindings], prefix), Path(out)) for point in points]
    todo = [r for r in rows if not finished(r)]
    options = check_points(files, bindings, todo, slurm or {})
    serial = executor == "local" and (jobs or 1) == 1
    if not serial and todo:
        from fp.tools.sweep.jobs import preflight

        preflight(executor, jobs, gpus_per_run)
    record_sweep(Path(out), points)  # what the sweep varies, for whatever compares its runs
    for row in rows:
        if finished(row):
            row.update(status="skipped (finished)",
                       **results(rundir.read_summary(Path(row["out_dir"]))))
    notify = on_update or (lambda rows: None)
    notify(rows)
    if serial:
        for row in todo:
            row["status"] = "running"
            notify(rows)
            run_one(row, files, [*bindings, *row["bindings"]], device, runner)
            notify(rows)
        return rows
    from fp.tools.sweep.jobs import JOBS_DIR, run_jobs

    run_jobs([(row, [*bindings, *row["bindings"]], opts) for row, opts in zip(todo, options)],
             files, kind=executor, jobs=jobs, gpus_per_run=gpus_per_run, device=device,
             folder=Path(out) / JOBS_DIR, notify=lambda: notify(rows), finish=record)
    notify(rows)
    return rows


def check_points(files: list[str], bindings: Sequence[str], rows: list[dict],
                 slurm: dict[str, Any]) -> list[cluster.Slurm]:
    """Parse every grid point before the first run starts, so a misspelt value fails the sweep
    now rather than hours later when its turn comes. Returns each point's ``slurm`` options."""
    if not rows:
        return []
    manager, options = make_manager(), []
    for row in rows:
        try:
            parse_config(files, [*bindings, *row["bindings"]], manager)
            block = dataclasses.replace(cluster.resolve(), **slurm)
            check_fields("slurm", block)
        except (ConfigError, RegistryError) as exc:
            raise type(exc)(f"grid point {' '.join(row['bindings']) or '(none)'}: {exc}") from None
        options.append(block)
    return options


def new_row(point: list[str], name: str, out: Path) -> dict[str, Any]:
    row = dict.fromkeys(ROW_KEYS)
    row.update(name=name, bindings=point, status="queued", out_dir=str(out / name))
    return row


def finished(row: dict[str, Any]) -> bool:
    return (Path(row["out_dir"]) / "summary.json").exists()


def run_one(row: dict[str, Any], files: list[str], bindings: list[str], device: str | None,
            runner: Callable[..., Any]) -> None:
    try:
        outcome = runner(files, bindings, out=Path(row["out_dir"]), device=device, quiet=True)
    except FpError as exc:
        row.update(status="failed", error=str(exc))
        return
    record(row, {"summary": outcome.summary, "resumed": outcome.resumed,
                 "already_finished": outcome.already_finished})


def record(row: dict[str, Any], result: dict[str, Any]) -> None:
    """A finished point's row, from its outcome (``summary``, ``resumed``, ``already_finished``,
    optionally ``started``/``ended``) or its ``error``."""
    row.update(started=result.get("started"), ended=result.get("ended"))
    if "error" in result:
        row.update(status="failed", error=result["error"])
        return
    status = ("skipped (finished)" if result.get("already_finished")
              else "done (resumed)" if result.get("resumed") else "done")
    row.update(status=status, **results(result["summary"]))


def results(summary: dict[str, Any]) -> dict[str, Any]:
    kept, dense = summary.get("filters_kept"), summary.get("dense_filters")
    return {"test_acc": summary.get("test_acc"), "best_test_acc": summary.get("best_test_acc"),
            "filters_kept_frac": kept / dense if kept is not None and dense else None,
            "wall_time_s": summary.get("wall_time_s")}


STATUS_STYLE = {"queued": "dim", "running": "bold yellow", "failed": "bold red"}


def live_table(rows: Sequence[dict]) -> Table:
    """The sweep's progress as a rich table (for ``rich.live.Live``): every point's state
    (queued, running, done, failed, skipped) and, for points run as jobs, the job's id."""
    jobs = any(row.get("job_id") for row in rows)
    table = Table("#", "run", *(["job"] if jobs else []), "status", "test acc", "best",
                  "filters kept", "time", title="sweep", title_justify="left")
    for number, row in enumerate(rows, 1):
        status = f"failed: {row['error']}" if row["error"] else row["status"]
        # Text, not markup: an error message may contain [brackets]
        table.add_row(str(number), Text(row["name"]), *([row.get("job_id") or ""] if jobs else []),
                      Text(status, style=STATUS_STYLE.get(row["status"], "green")),
                      percent(row["test_acc"]), percent(row["best_test_acc"]),
                      percent(row["filters_kept_frac"]),
                      "" if row["wall_time_s"] is None else f"{row['wall_time_s']:.0f}s")
    return table


def percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}%"
