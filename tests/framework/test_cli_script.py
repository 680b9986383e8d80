"""Bad input through the installed ``fp`` console script, in a subprocess, as a user meets it:
a non-zero exit, one line naming the culprit, never a traceback, and no finished run touched."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
FP = Path(sys.executable).with_name("fp")
QUICK = ["--bind", "digits.size=8", "--bind", "prune.samples=64", "--bind", "flow.enabled=False"]

pytestmark = pytest.mark.skipif(not FP.exists(), reason=f"no installed fp console script at {FP}")


def fp(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "FP_DISABLE_PLUGIN_AUTOLOAD": "1", "COLUMNS": "200", **(env or {})}
    full_env.pop("FP_DEBUG", None)
    return subprocess.run([str(FP), *args], cwd=REPO, env=full_env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize("args, needle", [
    (["run", "--nonsense"], "No such option"),
    (["frobnicate"], "No such command"),
    (["run"], "Missing argument"),
    (["run", "gin/quickstart.gin", "--nproc", "0"], "--nproc"),
    (["run", "gin/quickstart.gin", "--device", "gpu"], "--device"),
    (["eval", "x", "--batch-size", "0"], "--batch-size"),
])
def test_usage_errors_show_typers_usage_and_exit_2(args, needle):
    result = fp(*args)
    assert result.returncode == 2, result.stderr
    assert "Usage: fp" in result.stderr and needle in result.stderr
    assert "Traceback" not in result.stderr and "click" not in result.stderr


@pytest.mark.parametrize("binding, needles", [
    ("train.batch_size='many'", ["train.batch_size = 'many'", "an integer"]),
    ("prune.temperature=0", ["prune.temperature = 0", "greater than 0"]),
    ("train.lr_schedule='multistep'\ntrain.milestones=(0.75, 0.5)", ["train.milestones", "increase"]),
    ("prune.granularity='channel'", ["prune.granularity", "'filter', 'weight'"]),
    ("data.train_per_class=0", ["data.train_per_class = 0", "at least 1"]),
    ("experiment.device='cuda:7'", ["experiment.device = 'cuda:7'"]),
    ("digits.size='big'", ["digits.size = 'big'", "an integer"]),
    ("vgg13.layers='wide'", ["vgg13.layers = 'wide'"]),  # the built-in's short name resolves
])
def test_wrong_types_and_ranges_name_the_binding(tmp_path, binding, needles):
    result = fp("run", "gin/quickstart.gin", "--bind", binding, "--out", str(tmp_path / "r"))
    assert_one_line_error(result, 2, "error:", *needles)
    assert not (tmp_path / "r").exists()  # refused before anything was built or written


def test_unexpected_errors_are_one_line_unless_debug(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(
        "import fp.manager\n"
        "def broken(*args, **kwargs):\n"
        "    raise RuntimeError('a bug planted by the test')\n"
        "fp.manager.make_manager = broken\n")
    env = {"PYTHONPATH": str(tmp_path)}
    result = fp("list", "measures", env=env)
    assert_one_line_error(result, 1, "internal error: RuntimeError: a bug planted by the test",
                          "--debug")
    debug = fp("--debug", "list", "measures", env=env)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def imported_modules(result: subprocess.CompletedProcess) -> set[str]:
    """Module names from PYTHONPROFILEIMPORTTIME's report on stderr."""
    return {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["sweep", "--help"],
                                  ["run", "--nonsense"]])
def test_help_and_usage_errors_do_not_import_torch(args):
    result = fp(*args, env={"PYTHONPROFILEIMPORTTIME": "1"})
    modules = imported_modules(result)
    assert "typer" in modules and "torch" not in modules


def test_list_measures_loads_no_architectures():
    result = fp("list", "measures", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 0 and "snip" in result.stdout
    modules = imported_modules(result)
    assert "torchvision" not in modules and "fp_builtins.architectures" not in modules


def test_untrusted_and_damaged_model_files_are_refused_unread(tmp_path):
    marker = tmp_path / "code-ran"
    payload = tmp_path / "evil.pt"
    subprocess.run([sys.executable, "-c", (
        "import os, pickle, sys\n"
        "class Payload:\n"
        "    def __reduce__(self):\n"
        f"        return (os.system, ('touch {marker}',))\n"
        f"pickle.dump({{'model': Payload()}}, open({str(payload)!r}, 'wb'))\n")], check=True)
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(os.urandom(2048))
    for path in (payload, damaged):
        assert_one_line_error(fp("eval", str(path), "--dataset", "digits"), 2, "error:", str(path))
    assert not marker.exists()


def test_bad_sweep_and_report_inputs(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("not a folder")
    assert_one_line_error(fp("sweep", "gin/quickstart.gin", "--grid", "prune.measure",
                             "--out", str(tmp_path / "s")), 2, "prune.measure")
    assert_one_line_error(fp("sweep", "gin/quickstart.gin", "--grid", "prune.measure=snip",
                             "--out", str(a_file)), 2, str(a_file))
    assert_one_line_error(fp("report", str(tmp_path / "missing"), "--out", str(tmp_path / "r")),
                          2, "missing")
    point = ["sweep", "gin/quickstart.gin", "--grid", "experiment.seed=0", "--out", str(tmp_path / "j")]
    assert_one_line_error(fp(*point, "--executor", "slurm", env={"PATH": str(FP.parent)}), 2,
                          "sbatch and srun")
    assert_one_line_error(fp(*point, "--jobs", "2", "--gpus-per-run", "1",
                             env={"CUDA_VISIBLE_DEVICES": ""}), 2, "needs 2 GPUs")
    assert not (tmp_path / "j").exists()
    for bad in (["--executor", "pbs"], ["--jobs", "0"], ["--gpus-per-run", "-1"]):
        result = fp(*point, *bad)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert bad[0] in result.stderr


@pytest.mark.slow
def test_a_mistake_found_inside_distributed_workers_is_one_sentence(tmp_path):
    result = fp("run", "gin/quickstart.gin", "--nproc", "2", "--device", "cpu", "--out",
                str(tmp_path / "run"), "--bind", "data.train_per_class=100000")
    assert_one_line_error(result, 2, "data.train_per_class = 100000")


def wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_one_writer_per_run_directory_and_a_killed_writer_never_blocks_resume(tmp_path):
    out = tmp_path / "run"
    args = ["run", "gin/quickstart.gin", *QUICK, "--bind", "train.epochs=20", "--bind",
            "prune.rounds=2", "--out", str(out)]
    env = {**os.environ, "FP_DISABLE_PLUGIN_AUTOLOAD": "1"}
    first = subprocess.Popen([str(FP), *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        lock = out / "run.lock"
        assert wait_for(lambda: lock.exists() and lock.read_text().strip() == str(first.pid), 300)
        second = fp(*args)
        assert_one_line_error(second, 2, str(out), f"process {first.pid}")
        assert wait_for(lambda: (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir()), 300)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    resumed = fp(*args)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 20
    finished = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    again = fp(*args)
    assert again.returncode == 0 and "finished run" in again.stdout
    assert finished == {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
