"""Grid points as separate processes, through submitit: its LocalExecutor for ``fp sweep --jobs N``
(N processes at once on this machine, each given its own GPUs through ``CUDA_VISIBLE_DEVICES``)
and its SlurmExecutor for ``--executor slurm`` (one Slurm job per point).

Each job calls ``PointJob``, which runs the experiment into the point's run directory. On a
preemption or a time limit, submitit signals the job, calls ``PointJob.checkpoint`` and requeues
the same call; the run then resumes from its last epoch checkpoint, and the run directory's lock
keeps a second writer out meanwhile. submitit's pickles and each job's stdout/stderr stay in
``<sweep folder>/_jobs``.
"""
from __future__ import annotations

import os
import shutil
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Sequence

import submitit
from submitit.core.utils import FailedJobError, UncompletedJobError

from fp.config.cluster import Slurm
from fp.errors import ConfigError, FpError

JOBS_DIR = "_jobs"
#: seconds between looks at the jobs' states (sacct is asked at most this often on Slurm)
POLL_S = {"local": 0.5, "slurm": 15.0}
#: a local job's wall-clock limit: none worth the name
LOCAL_LIMIT_MIN = 60 * 24 * 365
#: submitit job states shown as "queued"; every other unfinished state is "running"
WAITING = {"PENDING", "REQUEUED", "CONFIGURING", "UNKNOWN", "RESIZING", "SUSPENDED"}


class PointJob(submitit.helpers.Checkpointable):
    """One grid point in its own process; the inherited ``checkpoint`` requeues the same call."""

    def __call__(self, files: list[str], bindings: list[str], out_dir: str, device: str | None,
                 gpus: int, threads: int | None) -> dict[str, Any]:
        started = time.time()
        import torch

        from fp.engine.experiment import run_experiment
        from fp.engine.launch import launch

        if threads:
            torch.set_num_threads(threads)
        result: dict[str, Any] = {"pid": os.getpid(), "started": started}
        try:
            if gpus > 1:  # one DDP rank per GPU the job was given
                ranks = launch(gpus, files, bindings, Path(out_dir), device)
                result.update(summary=ranks[0]["summary"], resumed=False, already_finished=False)
            else:
                outcome = run_experiment(files, bindings, out=Path(out_dir), device=device,
                                         quiet=True)
                result.update(summary=outcome.summary, resumed=outcome.resumed,
                              already_finished=outcome.already_finished)
        except FpError as exc:
            result["error"] = str(exc)
        result["ended"] = time.time()
        return result


def preflight(kind: str, jobs: int | None, gpus_per_run: int | None) -> None:
    """Refuse, before anything starts, a sweep this machine cannot run as asked."""
    if kind == "local":
        gpu_slots(jobs or 1, gpus_per_run)
    elif shutil.which("sbatch") is None or shutil.which("srun") is None:
        raise ConfigError("--executor slurm needs Slurm's sbatch and srun on PATH, and this "
                          "machine lacks them; run the sweep from a Slurm login node.")


def make_executor(kind: str, folder: Path):
    """submitit's executor for ``kind``, its pickles and logs in ``folder``."""
    if kind == "slurm":
        return submitit.SlurmExecutor(folder)
    executor = submitit.LocalExecutor(folder)
    executor.update_parameters(timeout_min=LOCAL_LIMIT_MIN)
    return executor


def slurm_parameters(slurm: Slurm, gpus: int) -> dict[str, Any]:
    """SlurmExecutor's parameters for one grid point (one node, one task)."""
    parameters: dict[str, Any] = dict(
        job_name="fp-sweep", nodes=1, ntasks_per_node=1, time=slurm.time_min,
        cpus_per_task=slurm.cpus_per_run, signal_delay_s=slurm.signal_delay_s)
    if gpus:
        parameters["gpus_per_node"] = gpus
    if slurm.partition:
        parameters["partition"] = slurm.partition
    if slurm.mem_gb is not None:
        parameters["mem"] = f"{max(1, round(slurm.mem_gb * 1024))}MB"
    if slurm.extra:
        parameters["additional_parameters"] = slurm.sbatch_extra()
    return parameters


def visible_gpus() -> list[int]:
    """This process's CUDA devices as the indices a child's CUDA_VISIBLE_DEVICES must name."""
    import torch

    count = torch.cuda.device_count()
    inherited = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not inherited:
        return list(range(count))
    names = [n.strip() for n in inherited.split(",") if n.strip()][:count]
    if not all(n.isdigit() for n in names):
        raise ConfigError(f"CUDA_VISIBLE_DEVICES={inherited!r} names devices by UUID; give "
                          f"--gpus-per-run a machine whose devices are numbered (unset it, or "
                          f"list indices).")
    return [int(n) for n in names]


def gpu_slots(jobs: int, per_run: int | None) -> tuple[list[tuple[int, ...]], int]:
    """One tuple of device indices per concurrent job, and the GPUs each run gets. ``per_run``
    None: 1 where this machine has GPUs, else 0; 0: every run sees every device."""
    devices = visible_gpus()
    per_run = (1 if devices else 0) if per_run is None else per_run
    if per_run == 0:
        return [tuple(devices)] * jobs, 0
    if jobs * per_run > len(devices):
        raise ConfigError(f"--jobs {jobs} with --gpus-per-run {per_run} needs "
                          f"{jobs * per_run} GPUs and this machine has {len(devices)}; lower "
                          f"one of them (--gpus-per-run 0 lets the runs share every device).")
    return [tuple(devices[i * per_run:(i + 1) * per_run]) for i in range(jobs)], per_run


def run_jobs(points: Sequence[tuple[dict, list[str], Slurm]], files: list[str], *, kind: str,
             jobs: int | None, gpus_per_run: int | None, device: str | None, folder: Path,
             notify: Callable[[], None], finish: Callable[[dict, dict], None]) -> None:
    """Run each ``(row, bindings, slurm)`` point as a submitit job, at most ``jobs`` at once
    (None: all), keeping each row's status current; ``finish(row, result)`` records a result."""
    preflight(kind, jobs, gpus_per_run)
    folder.mkdir(parents=True, exist_ok=True)
    executor = make_executor(kind, folder)
    if kind == "local":
        slots, local_gpus = gpu_slots(jobs or 1, gpus_per_run)
        local_threads = None if local_gpus else max(1, (os.cpu_count() or 1) // (jobs or 1))
    else:
        slots = [()] * (jobs or len(points) or 1)
    free, waiting, active = deque(slots), deque(points), []
    try:
        while waiting or active:
            while waiting and free:
                row, bindings, slurm = waiting.popleft()
                slot = free.popleft()
                if kind == "local":
                    gpus, threads = len(slot), local_threads
                    executor.update_parameters(gpus_per_node=gpus, visible_gpus=slot)
                else:
                    gpus = slurm.gpus_per_run if gpus_per_run is None else gpus_per_run
                    threads = slurm.cpus_per_run
                    executor.update_parameters(**slurm_parameters(slurm, gpus))
                job = executor.submit(PointJob(), files, bindings, row["out_dir"], device, gpus,
                                      threads)
                row.update(status="queued", job_id=str(job.job_id))
                active.append((row, job, slot))
            for entry in list(active):
                row, job, slot = entry
                if job.done():
                    finish(row, job_result(job))
                    free.append(slot)
                    active.remove(entry)
                else:
                    row["status"] = "queued" if job.state.upper() in WAITING else "running"
            notify()
            if active:
                time.sleep(POLL_S[kind])
    except KeyboardInterrupt:
        if kind == "local":  # local jobs die with the sweep; Slurm jobs run on
            for _, job, _ in active:
                job.cancel(check=False)
        raise


def job_result(job) -> dict[str, Any]:
    """The job's PointJob result, or an ``error`` saying how it ended without one."""
    try:
        return job.result()
    except FailedJobError as exc:
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else "no message"
    except UncompletedJobError:
        reason = f"it ended without a result (state {job.state})"
    return {"error": f"job {job.job_id} failed: {reason}; its log is {job.paths.stderr}"}
