"""The prepared GPU check (``benchmarks/gpu_check.sh`` running the package ``benchmarks/gpu_check``,
which the conftest here puts on the path) rehearsed on the CPU with ``--dry-run``: one JSON report
naming every part, the parts a CPU can run ok, the CUDA-only fields skipped, timings positive and
the extrapolation the sum it says it is; a bad command line is one sentence and exit 2; a CIFAR-10
archive is unpacked (a few images of a class) and trained on."""
from __future__ import annotations

import ast
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from statistics import median

import pytest

import fp
from gpu_check import cli, probes, train

REPO = Path(__file__).parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
PACKAGE = REPO / "benchmarks" / "gpu_check"
#: what the check may import from fp: the facade and the contract modules
PUBLIC = ("fp", "fp.errors", "fp.nn", "fp.attention", "fp.run", "fp.measure", "fp.data",
          "fp.schedule", "fp.hookspecs", "fp.validation", "fp.discover", "fp.device")
PARTS = ("environment", "process_group", "data", "on_device_data", "scoring", "protocol",
         "train_fp32", "train_amp_channels_last", "train_amp_channels_last_compile", "compile")
TIMED = ("train_fp32", "train_amp_channels_last")
NO_CUDA = "no CUDA in dry-run"


def check_script(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The script as a user starts it, with this venv's python first on PATH."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FP_DISABLE_PLUGIN_AUTOLOAD": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PYTHON", None)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def dry_run(out: Path, *args: str) -> dict:
    done = check_script("--dry-run", "--out", str(out), *args)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)  # stdout holds the JSON and nothing else
    assert json.loads((out / "gpu_check.json").read_text()) == report
    return report


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    return dry_run(tmp_path_factory.mktemp("gpu-check") / "out")


@pytest.mark.slow
def test_the_dry_run_reports_every_part_and_the_cpu_parts_pass(report):
    parts = report["parts"]
    assert tuple(parts) == PARTS
    assert report["summary"]["ok"] and report["summary"]["failed"] == []
    assert all(part["ok"] for part in parts.values())
    assert parts["environment"]["gpu"] == {"skipped": NO_CUDA}
    ran = [part for part in parts.values() if "part_s" in part]
    assert all(part["peak_gpu_memory"] == {"skipped": NO_CUDA} for part in ran)
    group = parts["process_group"]
    assert group["backend"] == "gloo" and group["all_reduce_value"] == 2.0
    assert group["nccl"] == {"skipped": NO_CUDA}
    assert parts["data"]["source"] == report["summary"]["data"] == "synthetic"
    device = parts["on_device_data"]
    assert device["batch"]["device"] == device["held"]["device"] == "cpu"
    assert device["held"]["dtype"] == "torch.uint8" and device["batch"]["dtype"] == "torch.float32"
    assert parts["train_amp_channels_last_compile"]["skipped"].startswith(NO_CUDA)
    assert parts["compile"]["compile_pays"] is None


@pytest.mark.slow
def test_the_dry_run_times_a_prune_event_of_every_paper_measure(report):
    scoring = report["parts"]["scoring"]
    assert set(scoring["measures"]) == set(probes.PAPER_MEASURES)
    for name, event in scoring["measures"].items():
        assert event["ok"] and event["event_s"] > 0 and event["score_s"] >= 0, name
    assert scoring["measures"]["grasp"]["hvp_method"] in ("double_backward",
                                                          "forward_over_reverse")
    assert scoring["measures"]["grasp"]["balanced"] is True
    assert 0 < scoring["hvp_budget_mb"] <= scoring["free_memory_mb"]


@pytest.mark.slow
@pytest.mark.parametrize("variant", TIMED)
def test_the_extrapolation_is_the_sum_of_the_timed_epochs_parts(report, variant):
    protocol = report["parts"]["protocol"]
    assert protocol["short_run_matches_protocol"] and "train.epochs = 2" in protocol["short_run"]
    assert (protocol["epochs"], protocol["rounds"], protocol["target"]) == (160, 25, 0.6)
    timed = report["parts"][variant]
    epochs = timed["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    for e in epochs:
        assert e["epoch_s"] > 0 and e["step_s"] > 0 and e["prune_s"] > 0 and e["steady_epoch_s"] > 0
        assert e["steady_epoch_s"] + e["warmup_s"] + e["prune_s"] == pytest.approx(e["epoch_s"],
                                                                                   abs=1e-3)
    x = timed["extrapolation"]
    assert x["steady_epoch_s"] == pytest.approx(median(e["steady_epoch_s"] for e in epochs[1:]))
    assert x["prune_event_s"] == pytest.approx(median(e["prune_s"] for e in epochs))
    assert x["timed_rewarm_s"] == pytest.approx(epochs[1]["warmup_s"])
    assert x["rewarm_s"] == epochs[-1]["warmup_s"]
    total = (x["first_warmup_s"] + x["timed_rewarm_s"] + 24 * x["rewarm_s"]
             + 160 * x["steady_epoch_s"] + 25 * x["prune_event_s"])
    assert x["formula"].startswith("first_warmup_s + timed_rewarm_s + 24 x rewarm_s + 160 x")
    assert x["full_protocol_s"] == pytest.approx(total, abs=0.05)
    assert x["full_protocol_h"] == pytest.approx(x["full_protocol_s"] / 3600, abs=1e-3)
    assert report["summary"]["full_protocol_h"][variant] == x["full_protocol_h"]
    assert report["parts"]["compile"]["full_protocol_s"][variant.removeprefix("train_")] == \
        x["full_protocol_s"]


@pytest.mark.slow
def test_the_dry_run_trains_on_a_cifar_archive(tmp_path, cifar10_archive):
    report = dry_run(tmp_path / "out", "--data", str(cifar10_archive))
    parts = report["parts"]
    assert report["summary"]["ok"], report["summary"]
    assert parts["data"]["source"] == "folder" and parts["data"]["classes"] == 10
    assert parts["data"]["images"] == {"train": 160, "test": 40}  # 16 and 4 of each class
    assert parts["on_device_data"]["dataset"] == "imagefolder"
    assert parts["on_device_data"]["held"]["dtype"] == "torch.uint8"
    assert len(parts["train_fp32"]["epochs"]) == 2


@pytest.mark.parametrize("args, needle", [
    (["--data", "{tmp}/missing.tar.gz"], "is not a file"),
    (["--data", "{tmp}/plain.txt"], "is not a tar archive"),
    (["--out", "{tmp}/plain.txt"], "is not a folder"),
    (["--epochs", "0"], "--epochs 0 must be at least 1"),
    (["--budget", "-5"], "--budget -5 must be a positive"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
])
def test_a_bad_command_line_is_one_sentence_and_exit_2(tmp_path, capsys, args, needle):
    (tmp_path / "plain.txt").write_text("not an archive")
    code = cli.main([a.format(tmp=tmp_path) for a in args] + ["--dry-run"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and needle in err and "Traceback" not in err


def test_the_script_passes_a_missing_archive_back_as_one_sentence(tmp_path):
    done = check_script("--dry-run", "--data", str(tmp_path / "missing.tar.gz"), timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing.tar.gz is not a file" in lines[0], done.stderr


def write_archive(path: Path, top: str, per_class: int) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for split in ("test", "train"):
            for label in ("cat", "dog"):
                for i in range(per_class):
                    info = tarfile.TarInfo(f"{top}{split}/{label}/{i:04d}.jpg")
                    info.size = 3
                    tar.addfile(info, io.BytesIO(b"jpg"))


@pytest.mark.parametrize("top", ["", "cifar10/"])
def test_unpack_keeps_a_few_images_of_each_class_and_finds_the_root(tmp_path, top):
    write_archive(tmp_path / "data.tar.gz", top, per_class=12)
    found = probes.unpack(tmp_path / "data.tar.gz", tmp_path / "into", per_class=8)
    assert Path(found["root"]) == tmp_path / "into" / top
    assert found["images"] == {"train": 16, "test": 4} and found["classes"] == 2
    everything = probes.unpack(tmp_path / "data.tar.gz", tmp_path / "all")
    assert everything["images"] == {"train": 24, "test": 24}


def test_unpack_names_an_archive_without_train_and_test(tmp_path):
    with tarfile.open(tmp_path / "odd.tar.gz", "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("images/a.jpg"), io.BytesIO(b""))
    with pytest.raises(ValueError, match="holds no train/ and test/ folders"):
        probes.unpack(tmp_path / "odd.tar.gz", tmp_path / "into")


def test_the_short_run_plans_the_protocols_first_prune_events():
    manager = fp.make_manager(autoload=False)
    proto = train.protocol([str(REPO / "gin/resnet56_snip.gin")], [], manager)
    assert (proto["epochs"], proto["rounds"], proto["target"]) == (160, 25, 0.6)
    bindings, same = train.short_bindings(proto, 3, manager)
    assert same and "train.epochs = 3" in bindings and "prune.rounds = 3" in bindings
    schedule = manager.registries["schedules"].build("rounds")
    target = schedule.plan(0.6, 25, 160, 1)[2].target
    assert f"prune.target = {target!r}" in bindings


def test_an_epoch_splits_into_warmup_steady_steps_and_the_prune_event():
    stamps = {"start": 0.0, "warm": 3.0, "trained": 10.0, "pruned": 12.0}
    parts = train.split_epoch(stamps, end=13.0, steps=12, warm=5)
    assert parts["step_s"] == 1.0  # 7 s for the 7 steps after the 5th
    assert parts["warmup_s"] == 0.0 and parts["prune_s"] == 2.0 and parts["epoch_s"] == 13.0
    slow_start = train.split_epoch({**stamps, "warm": 8.0}, end=13.0, steps=12, warm=5)
    assert slow_start["step_s"] == pytest.approx(2 / 7)
    assert slow_start["warmup_s"] == pytest.approx(8 - 5 * 2 / 7)


def test_the_protocol_is_extrapolated_from_warmups_steady_epochs_and_prune_events():
    def epoch(warmup, steady, prune):
        return {"warmup_s": warmup, "steady_epoch_s": steady, "prune_s": prune}

    proto = {"epochs": 160, "rounds": 25, "target": 0.6}
    timed = [epoch(30.0, 9.0, 2.0), epoch(10.0, 5.0, 1.0), epoch(0.5, 6.0, 3.0)]
    x = train.extrapolate(timed, proto)
    assert (x["timed_rewarm_s"], x["rewarm_s"], x["steady_epoch_s"], x["prune_event_s"]) == \
        (10.5, 0.5, 5.5, 2.0)
    assert x["full_protocol_s"] == 30 + 10.5 + 23 * 0.5 + 160 * 5.5 + 25 * 2.0
    alone = train.extrapolate(timed[:1], proto)
    assert alone["full_protocol_s"] == 30 + 25 * 30 + 160 * 9 + 25 * 2
    assert "one epoch timed" in alone["caveat"]


def test_the_check_uses_only_fps_public_api():
    """It lives outside the package so that it can run against any installed fp: its imports from
    fp are the facade and the contract modules, and the facade names it uses are exported."""
    imported, used = set(), set()
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level:
                imported.add(node.module)
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and node.value.id == "fp"):
                used.add(node.attr)
    private = {m for m in imported if m.split(".")[0] == "fp" and not any(
        m == api or (api != "fp" and m.startswith(api + ".")) for api in PUBLIC)}
    assert private == set()
    assert used and used <= set(fp.__all__), used - set(fp.__all__)
