"""``fp sweep`` on submitit: grid points as real parallel processes (its LocalExecutor), a
preempted job requeued and resumed, Slurm's submission built by submitit's own code."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from fp.config.cluster import Slurm
from fp.errors import ConfigError
from fp.tools.sweep import check_points, new_row, sweep
from fp.tools.sweep.jobs import (JOBS_DIR, PointJob, gpu_slots, make_executor, preflight,
                                 slurm_parameters)

QUICKSTART = str(Path(__file__).resolve().parents[2] / "gin" / "quickstart.gin")
SMALL = ["train.epochs=3", "prune.rounds=1", "prune.samples=128", "digits.size=8",
         "flow.enabled=False"]


@pytest.mark.slow
def test_two_jobs_run_at_once_in_their_own_processes_and_a_failure_stops_nothing(tmp_path):
    seen: list[list[str]] = []
    rows = sweep(QUICKSTART, ["data.train_per_class=100000,20,30"], bindings=SMALL, out=tmp_path,
                 jobs=2, on_update=lambda rows: seen.append([r["status"] for r in rows]))
    failed, *done = rows
    assert failed["status"] == "failed" and "data.train_per_class = 100000" in failed["error"]
    assert [r["status"] for r in done] == ["done", "done"], [r["error"] for r in done]
    for row in done:
        summary = json.loads((Path(row["out_dir"]) / "summary.json").read_text())
        assert row["test_acc"] == summary["test_acc"] and row["job_id"]
    # the first two points were submitted together and overlapped in time
    first, second = rows[0], rows[1]
    assert max(first["started"], second["started"]) < min(first["ended"], second["ended"])
    assert ["queued", "queued", "queued"] in seen
    assert any(states[:2].count("running") + states[:2].count("queued") == 2
               and states[2] == "queued" for states in seen)  # never more than 2 at once
    assert all(states[2] == "queued" for states in seen
               if states[0] in ("queued", "running") and states[1] in ("queued", "running"))
    assert list((tmp_path / JOBS_DIR).glob("*_log.err"))  # submitit's logs, in the sweep folder
    again = sweep(QUICKSTART, ["data.train_per_class=20,30"], bindings=SMALL, out=tmp_path, jobs=2)
    assert [r["status"] for r in again] == ["skipped (finished)"] * 2


@pytest.mark.slow
def test_a_preempted_job_is_requeued_and_resumes_from_its_checkpoint(tmp_path):
    executor = make_executor("local", tmp_path / JOBS_DIR)
    out = tmp_path / "run"
    bindings = [*SMALL, "train.epochs=40", "prune.rounds=2"]
    job = executor.submit(PointJob(), [QUICKSTART], bindings, str(out), "cpu", 0, 1)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and '"epoch": 3' in metrics.read_text()):
        assert job.state == "RUNNING" and time.monotonic() < deadline, job.stderr()
        time.sleep(0.1)
    # what Slurm sends a job's task before preempting it: submitit checkpoints and requeues
    os.kill(int((out / "run.lock").read_text()), signal.SIGUSR2)
    result = job.result()
    assert "error" not in result, result
    assert result["resumed"] is True and result["summary"]["epochs"] == 40
    assert "this job is preempted" in (tmp_path / JOBS_DIR / f"{job.job_id}_0_log.err").read_text()


def test_cpu_slots_share_no_gpus_and_gpu_requests_are_checked(monkeypatch):
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    assert gpu_slots(3, None) == ([(), (), ()], 0)
    with pytest.raises(ConfigError, match="needs 2 GPUs and this machine has 0"):
        gpu_slots(2, 1)


def test_each_job_gets_its_own_gpus_through_their_indices(monkeypatch):
    monkeypatch.setattr("torch.cuda.device_count", lambda: 4)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpu_slots(2, 2) == ([(0, 1), (2, 3)], 2)
    assert gpu_slots(3, None) == ([(0,), (1,), (2,)], 1)
    assert gpu_slots(2, 0) == ([(0, 1, 2, 3)] * 2, 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    assert gpu_slots(2, 2) == ([(4, 5), (6, 7)], 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1a2b,GPU-3c4d,GPU-5e,GPU-6f")
    with pytest.raises(ConfigError, match="UUID"):
        gpu_slots(2, 1)


def test_slurm_options_come_from_gin_and_the_command_line_wins(tmp_path):
    rows = [new_row(["experiment.seed=0"], "a", tmp_path), new_row(["experiment.seed=1"], "b", tmp_path)]
    options = check_points([QUICKSTART], ["slurm.partition='gpu'", "slurm.time_min=90",
                                          "slurm.extra=('account=lab',)"], rows, {"time_min": 30})
    assert [o.partition for o in options] == ["gpu", "gpu"]
    assert options[0].time_min == 30 and options[0].sbatch_extra() == {"account": "lab"}
    with pytest.raises(ConfigError, match="slurm.extra"):
        check_points([QUICKSTART], ["slurm.extra=('account',)"], rows[:1], {})
    with pytest.raises(ConfigError, match="slurm.cpus_per_run"):
        check_points([QUICKSTART], [], rows[:1], {"cpus_per_run": 0})


def test_the_sbatch_script_is_written_by_submitits_slurm_executor(tmp_path, monkeypatch):
    for tool in ("srun", "sbatch"):  # SlurmExecutor only checks that they exist
        (tmp_path / tool).write_text("#!/bin/sh\nexit 1\n")
        (tmp_path / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    preflight("slurm", None, None)
    executor = make_executor("slurm", tmp_path / JOBS_DIR)
    slurm = Slurm(partition="gpu", time_min=90, cpus_per_run=8, mem_gb=32, extra=("account=lab",))
    executor.update_parameters(**slurm_parameters(slurm, 2))
    script = executor._make_submission_file_text("python -m submitit.core._submit x", "uid")
    for line in ("--partition=gpu", "--time=90", "--gpus-per-node=2", "--cpus-per-task=8",
                 "--mem=32768MB", "--account=lab", "--signal=USR2@120", "--ntasks-per-node=1"):
        assert f"#SBATCH {line}\n" in script
    assert str(tmp_path / JOBS_DIR) in script  # the job logs land in the sweep folder
    assert "--gpus-per-node" not in str(slurm_parameters(Slurm(), 0))


def test_without_slurm_the_slurm_executor_is_refused_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="sbatch and srun"):
        sweep(QUICKSTART, ["experiment.seed=0"], out=tmp_path / "s", executor="slurm")
    assert not (tmp_path / "s").exists()
    with pytest.raises(ConfigError, match="executor"):
        sweep(QUICKSTART, ["experiment.seed=0"], out=tmp_path / "s", executor="pbs")


@pytest.mark.slow
def test_a_point_given_several_devices_trains_them_as_ddp_ranks(tmp_path):
    # on CPU the job's "GPUs" become gloo ranks: the same path a 2-GPU job takes with NCCL
    result = PointJob()([QUICKSTART], SMALL, str(tmp_path / "run"), "cpu", 2, 1)
    assert "error" not in result, result
    assert result["summary"]["world_size"] == 2
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["world_size"] == 2
