"""Crash safety: a run killed at any moment resumes to the same final numbers."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import fp

REPO = Path(__file__).parents[2]
BINDS = ["train.epochs = 3", "prune.rounds = 2", "prune.target = 0.5", "prune.samples = 64",
         "digits.size = 8", "train.batch_size = 64", "flow.enabled = False"]
#: iterative magnitude pruning: weight masks, and a rewind point (the initialisation) that the
#: checkpoint must carry for the rewinds after a resume
IMP = ["prune.granularity = 'weight'", "prune.measure = 'magnitude'", "prune.schedule = 'imp'",
       "train.epochs = 1", "prune.rounds = 2"]
COMPARED = ["test_acc", "best_test_acc", "test_loss", "train_loss", "train_acc", "params",
            "flops", "filters_kept", "epochs", "steps", "prune_events"]


def start(out: Path, *extra: str) -> subprocess.Popen:
    # fp.cli is a package without __main__: the console script's entry point, called directly
    args = [sys.executable, "-c", "from fp.cli import main; main()", "run", "gin/quickstart.gin",
            "--out", str(out)]
    for binding in BINDS + list(extra):
        args += ["--bind", binding]
    env = dict(os.environ, FP_DISABLE_PLUGIN_AUTOLOAD="1")
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(out: Path, *extra: str) -> str:
    proc = start(out, *extra)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    return output


def wait_for_epochs(out: Path, proc: subprocess.Popen, epochs: int) -> None:
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.read_text().count('"event": "epoch"') >= epochs:
            return
        time.sleep(0.05)
    raise AssertionError(f"run did not reach epoch {epochs}: {proc.communicate()[0]}")


def final(out: Path) -> tuple[dict, dict]:
    summary = json.loads((out / "summary.json").read_text())
    weights = fp.load(out / "model.pt").state_dict()
    return {k: summary[k] for k in COMPARED}, weights


def assert_same_run(a: Path, b: Path) -> None:
    (sa, wa), (sb, wb) = final(a), final(b)
    assert sa == sb
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name
    assert (a / "metrics.jsonl").read_text().count("\n") == (b / "metrics.jsonl").read_text().count("\n")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    finish(out)
    return out


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(reference, tmp_path):
    out = tmp_path / "killed"
    proc = start(out)
    wait_for_epochs(out, proc, 1)
    # at once (within the 50 ms poll): early in epoch 2. A fixed sleep here let an unloaded
    # machine finish the remaining two epochs first, so the kill found a finished run
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists()
    output = finish(out)
    assert "resumed from the checkpoint" in output
    assert_same_run(reference, out)


@pytest.mark.slow
def test_an_imp_run_killed_mid_run_resumes_with_its_rewind_point(tmp_path):
    reference = tmp_path / "reference"
    finish(reference, *IMP)
    out = tmp_path / "killed"
    proc = start(out, *IMP)
    wait_for_epochs(out, proc, 1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists()
    output = finish(out, *IMP)
    assert "resumed from the checkpoint" in output
    assert_same_run(reference, out)
    assert json.loads((out / "summary.json").read_text())["sparsity"] > 0


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_cleanly(reference, tmp_path):
    out = tmp_path / "terminated"
    proc = start(out)
    wait_for_epochs(out, proc, 1)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=300)
    if proc.returncode == 0:  # the run ended before the signal landed: nothing to resume
        return
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert "stopped by SIGTERM" in output and "Traceback" not in output
    assert (out / "checkpoints" / "last.pt").exists()
    finish(out)
    assert_same_run(reference, out)


@pytest.mark.slow
def test_corrupt_checkpoint_is_named_and_kept(tmp_path):
    out = tmp_path / "corrupt"
    proc = start(out)
    wait_for_epochs(out, proc, 1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = out / "checkpoints" / "last.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    proc = start(out)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "Traceback" not in output
    assert str(ckpt) in output.replace("\n", "") and "corrupt" in output
    assert ckpt.stat().st_size == 100
