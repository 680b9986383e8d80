"""A checkpoint of another format version is refused before anything is touched: through
``fp run``, one sentence naming the version found and the version this flowprune reads, and a
non-zero exit; the run directory, a finished run's included, stays as it was."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fp
from fp.engine import checkpoint
from fp.errors import CheckpointError

REPO = Path(__file__).parents[2]
FP = [sys.executable, "-c", "from fp.cli import main; main()"]
TINY = ["train.epochs = 2", "prune.rounds = 1", "prune.target = 0.5", "prune.samples = 64",
        "digits.size = 8", "train.batch_size = 128", "flow.enabled = False"]
WRONG = checkpoint.VERSION + 1


def fp_run(out: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [*FP, "run", "gin/quickstart.gin", "--out", str(out), *extra]
    for binding in TINY:
        args += ["--bind", binding]
    env = {**os.environ, "FP_DISABLE_PLUGIN_AUTOLOAD": "1", "COLUMNS": "400"}
    env.pop("FP_DEBUG", None)
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
                          stdin=subprocess.DEVNULL)


def contents(folder: Path) -> dict[Path, bytes]:
    """Every file's bytes; run.lock only names the last process that held the lock."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "run.lock"}


def set_version(path: Path, version: int) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    state["version"] = version
    torch.save(state, path)


def assert_refused(result: subprocess.CompletedProcess, last: Path) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert str(last) in lines[0]
    assert f"format version {WRONG}, and this flowprune reads version {checkpoint.VERSION}" \
        in lines[0]


def test_the_version_check_names_the_version_found_and_the_one_read(tmp_path):
    path = tmp_path / "last.pt"
    checkpoint.check_version({"version": checkpoint.VERSION}, path)  # this one reads
    with pytest.raises(CheckpointError) as refused:
        checkpoint.check_version({"version": WRONG}, path)
    message = str(refused.value)
    assert str(path) in message and message.endswith(".") and "\n" not in message
    assert f"format version {WRONG}, and this flowprune reads version {checkpoint.VERSION}" \
        in message
    with pytest.raises(CheckpointError, match="format version None"):
        checkpoint.check_version({"model": {}}, path)  # written before versions were checked


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    done = fp_run(out)
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.slow
def test_a_checkpoint_of_another_version_is_refused_and_kept(finished, tmp_path):
    out = tmp_path / "stopped"
    shutil.copytree(finished, out)
    for name in ("summary.json", "model.pt"):  # a run stopped before its end has neither
        (out / name).unlink()
    last = out / "checkpoints" / "last.pt"
    set_version(last, WRONG)
    before = contents(out)
    assert_refused(fp_run(out), last)
    assert contents(out) == before


@pytest.mark.slow
def test_a_finished_run_is_not_damaged_by_the_refusal(finished):
    last = finished / "checkpoints" / "last.pt"
    summary = (finished / "summary.json").read_text()
    set_version(last, WRONG)
    before = contents(finished)
    again = fp_run(finished)  # found finished: its checkpoint is not even read
    assert again.returncode == 0, again.stderr
    assert contents(finished) == before
    assert_refused(fp_run(finished, "--force"), last)  # asked to continue it: refused
    assert contents(finished) == before
    assert (finished / "summary.json").read_text() == summary
    assert fp.load(finished / "model.pt") is not None


def test_a_version_1_checkpoint_is_read_in_the_version_2_layout():
    """Version 1 kept the weight masks beside the model and the rewind point in the plugin state;
    a run interrupted under it resumes from the same contents."""
    mask = torch.tensor([True, False, True])
    weights = {"conv.weight": torch.ones(3)}
    v1 = {"version": 1, "model": {"arch": {"name": "x"}, "masks": {}},
          "masks": {"conv.weight": mask}, "epoch": 3,
          "plugins": {"rewind": weights, "cycle_start": 2, "flow": {"kept": 1}}}
    v2 = checkpoint.upgraded(v1)
    assert v2["version"] == checkpoint.VERSION == 2 and "masks" not in v2
    assert torch.equal(v2["model"]["masks"]["conv.weight"], mask)
    assert v2["rewind"] == {"weights": weights, "cycle_start": 2}
    assert v2["plugins"] == {"flow": {"kept": 1}} and v2["epoch"] == 3
    assert v1["plugins"]["cycle_start"] == 2  # the checkpoint read is not changed
    without_rewind = checkpoint.upgraded({**v1, "plugins": {}, "masks": {}})
    assert without_rewind["rewind"] == {"weights": None, "cycle_start": 0}
    assert without_rewind["model"]["masks"] == {}
    assert checkpoint.upgraded(v2) is v2
