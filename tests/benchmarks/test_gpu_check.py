"""The prepared GPU check (``benchmarks/gpu_check.sh`` running the package ``benchmarks/gpu_check``,
which the conftest here puts on the path) rehearsed on the CPU with ``--dry-run``, in both modes:
one JSON report naming every part, the parts a CPU can run ok (the compiled variant with the eager
backend, the TF32 comparison, the layout mode), the CUDA-only fields skipped, timings positive and
the extrapolation the sum it says it is; the default check's time plan fits its 6-minute slot; a
bad command line is one sentence and exit 2; a CIFAR-10 archive is unpacked (a few images of a
class) and trained on."""
from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from statistics import median

import pytest
import torch
from torch import nn

import fp
from fp.nn import channels_last_names
from gpu_check import budget, cli, layout, probes, rankings, train
from gpu_check.check import Check, compile_skip_reason
from gpu_check.sizes import FULL

REPO = Path(__file__).parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
PACKAGE = REPO / "benchmarks" / "gpu_check"
#: what the check may import from fp: the facade and the contract modules, and the public timing
#: and precision modules (docs/eval.md, fp.precision)
PUBLIC = ("fp", "fp.errors", "fp.nn", "fp.attention", "fp.run", "fp.measure", "fp.data",
          "fp.schedule", "fp.hookspecs", "fp.validation", "fp.discover", "fp.device",
          "fp.precision", "fp.timing")
PARTS = ("environment", "process_group", "data", "on_device_data", "scoring", "tf32_training",
         "protocol", "train_fp32", "train_amp_channels_last", "train_amp_channels_last_compile",
         "compile")
LAYOUT_PARTS = ("environment", "layout_build", "layout_steps", "recompile")
TIMED = ("train_fp32", "train_amp_channels_last", "train_amp_channels_last_compile")
NO_CUDA = "no CUDA in dry-run"
#: the paper protocol of gin/resnet56_snip.gin: 160 epochs, a prune event after each of the first 25
PROTOCOL = {"epochs": 160, "rounds": 25, "target": 0.6, "prune_epochs": list(range(1, 26))}


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


@pytest.fixture(scope="module")
def layout_report(tmp_path_factory) -> dict:
    return dry_run(tmp_path_factory.mktemp("gpu-check-layout") / "out", "--mode", "layout")


@pytest.mark.slow
def test_the_dry_run_reports_every_part_and_the_cpu_parts_pass(report):
    parts = report["parts"]
    assert tuple(parts) == PARTS
    assert report["summary"]["ok"] and report["summary"]["failed"] == []
    assert report["summary"]["mode"] == "check"
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


@pytest.mark.slow
def test_the_dry_run_says_how_long_each_part_took_against_its_budget(report):
    time = report["summary"]["time"]
    assert set(time["parts"]) == set(PARTS)
    for name, part in time["parts"].items():
        assert part["budget_s"] > 0 and part["took_s"] >= 0, name
        assert report["parts"][name]["part_s"] == part["took_s"], name
        assert report["parts"][name]["budget_s"] == part["budget_s"], name
    # the dry run rehearses the opt-in compiled variant, so its plan holds that part's budget too
    assert time["budget_s"] == pytest.approx(sum(budget.CHECK_PARTS.values())
                                             + sum(budget.COMPILE_PART.values()))
    assert time["worst_case_s"] == pytest.approx(budget.worst_case_s(time["budget_s"]))
    assert time["startup_s"] is not None and time["startup_s"] > 0  # the script timed it
    assert time["check_s"] > 0


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
def test_the_dry_run_compares_each_measures_ranking_with_tf32_on_and_off(report):
    """On a CPU, TF32 does nothing: both scorings are identical, so are the decisions; the
    comparison still runs end to end, as it will on the GPU."""
    measures = report["parts"]["scoring"]["measures"]
    rankings_seen = report["summary"]["tf32"]["rankings"]
    assert set(rankings_seen) == set(probes.PAPER_MEASURES)
    for name, event in measures.items():
        tf32 = event["tf32"]
        assert tf32["filters"] > 0 and tf32["score_s"] >= 0, name
        assert tf32["identical_scores"] and tf32["spearman"] == 1.0, name
        assert tf32["decisions_differ"] == 0.0 and tf32["filters_decided_differently"] == 0, name
        assert rankings_seen[name] == {"spearman": tf32["spearman"],
                                       "decisions_differ": tf32["decisions_differ"]}
    steps = report["parts"]["tf32_training"]
    assert steps["tf32_has_effect"] is False and "cpu" in steps["why"]
    assert steps["fp32_step_s"] > 0 and steps["tf32_step_s"] > 0 and steps["tf32_speedup"] > 0
    assert steps["steps_timed"] == steps["steps_per_sample"] * steps["pairs"]
    assert steps["tf32_enabled_after"] is False  # the run's setting put back, TF32 off
    assert report["summary"]["tf32"]["training_step_speedup"] == steps["tf32_speedup"]


@pytest.mark.slow
@pytest.mark.parametrize("variant", TIMED)
def test_the_extrapolation_is_the_sum_of_the_timed_epochs_parts(report, variant):
    protocol = report["parts"]["protocol"]
    assert protocol["short_run_matches_protocol"] and "train.epochs = 2" in protocol["short_run"]
    assert (protocol["epochs"], protocol["rounds"], protocol["target"]) == (160, 25, 0.6)
    assert protocol["prune_epochs"] == list(range(1, 26)) and protocol["models_trained"] == 26
    timed = report["parts"][variant]
    epochs = timed["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    for e in epochs:
        assert e["epoch_s"] > 0 and e["step_s"] > 0 and e["prune_s"] > 0 and e["steady_epoch_s"] > 0
        assert e["steady_epoch_s"] + e["warmup_s"] + e["tail_s"] + e["prune_s"] == \
            pytest.approx(e["epoch_s"], abs=1e-3)
    x = timed["extrapolation"]
    starts = [e["warmup_s"] + e["tail_s"] for e in epochs]  # each epoch trains a new model
    # the report rounds seconds to 6 decimals; a median of two rounded values may sit half a unit
    # from the rounded median, so the comparisons allow one unit of the last digit, whatever
    # digits the timings had
    unit = 1e-6
    assert x["steady_epoch_s"] == pytest.approx(median(e["steady_epoch_s"] for e in epochs[1:]),
                                                abs=unit)
    assert x["prune_event_s"] == pytest.approx(median(e["prune_s"] for e in epochs), abs=unit)
    assert x["first_start_s"] == pytest.approx(starts[0], abs=1e-5)
    assert x["restarts_timed_s"] == pytest.approx(starts[1:], abs=1e-5)
    assert x["restart_s"] == pytest.approx(starts[-1], abs=1e-5)
    assert x["models_trained"] == 26 and x["restarts_estimated"] == 24
    total = sum(starts) + 24 * starts[-1] + 160 * x["steady_epoch_s"] + 25 * x["prune_event_s"]
    assert x["formula"].startswith("first_start_s + sum(restarts_timed_s) + 24 x restart_s + "
                                   "160 x")
    assert x["full_protocol_s"] == pytest.approx(total, abs=0.05)
    assert x["full_protocol_h"] == pytest.approx(x["full_protocol_s"] / 3600, abs=1e-3)
    assert report["summary"]["full_protocol_h"][variant] == x["full_protocol_h"]
    assert report["parts"]["compile"]["full_protocol_s"][variant.removeprefix("train_")] == \
        x["full_protocol_s"]


@pytest.mark.slow
def test_the_dry_run_compiles_with_the_eager_backend_and_counts_the_compiles(report):
    compiled = report["parts"]["train_amp_channels_last_compile"]
    assert "experiment.compile_backend = 'eager'" in compiled["bindings"]
    engine = compiled["engine_compile"]  # summary.json's compile block
    assert engine["backend"] == "eager" and engine["ended_compiled"] is True
    assert engine["compiled_steps"] == engine["steps"] == compiled["steps"] == 2 * 4
    # the first model and the one after the first prune event; the model after the second
    # (last) event never trains in the short run, so it is never compiled
    assert engine["models_compiled"] == 2
    assert [e["compiled_steps"] for e in compiled["epochs"]] == [4, 4]
    assert compiled["every_step_compiled"] is True
    assert compiled["last_batch"] == 64 and compiled["graphs_per_model"] == 1
    c = compiled["extrapolation"]["compiles"]
    assert c["models_compiled"] == 1 + 25 and c["graph_compiles"] == 26
    assert c["compiled_steps"] == 160 * compiled["steps_per_epoch"]
    verdict = report["parts"]["compile"]
    full = verdict["full_protocol_s"]
    assert verdict["compile_pays"] == (full["amp_channels_last_compile"]
                                       < full["amp_channels_last"])
    assert verdict["verdict"].startswith("torch.compile pays" if verdict["compile_pays"] else
                                         "torch.compile does not pay")
    assert report["summary"]["compile_pays"] == verdict["compile_pays"]
    assert report["summary"]["compile_verdict"] == verdict["verdict"]


@pytest.mark.slow
def test_the_layout_dry_run_times_kept_channels_last_against_contiguous_and_a_recompile(
        layout_report):
    parts = layout_report["parts"]
    assert tuple(parts) == LAYOUT_PARTS
    summary = layout_report["summary"]
    assert summary["ok"] and summary["mode"] == "layout" and summary["failed"] == []
    build = parts["layout_build"]
    tensors = build["channels_last_tensors"]
    assert tensors["dense"] > 0 and tensors["after_surgery"] == tensors["dense"]
    assert tensors["contiguous_copy"] == 0 and build["layout_lost_in_surgery"] == []
    assert build["measure"] == "snip" and 0 < build["pruned_fraction"] < 0.6
    assert summary["surgery_kept_layout"] is True
    steps = parts["layout_steps"]
    assert steps["inputs"] == "channels-last, bf16 autocast"
    assert steps["contiguous_step_s"] > 0 and steps["channels_last_step_s"] > 0
    assert steps["steps_timed"] == steps["steps_per_sample"] * steps["pairs"]
    assert steps["still_channels_last"] == tensors["after_surgery"]
    assert summary["channels_last_speedup"] == steps["channels_last_speedup"] > 0
    recompile = parts["recompile"]
    assert recompile["backend"] == "eager" and recompile["recompile_s"] > 0
    assert recompile["compiled_step_s"] > 0 and summary["recompile_s"] == recompile["recompile_s"]
    time = summary["time"]
    assert set(time["parts"]) == set(LAYOUT_PARTS) and time["slot_s"] == 120
    assert time["fits_slot"] is True


@pytest.mark.slow
def test_the_dry_run_trains_on_a_cifar_archive(tmp_path, cifar10_archive):
    report = dry_run(tmp_path / "out", "--data", str(cifar10_archive), "--compile", "no")
    parts = report["parts"]
    assert report["summary"]["ok"], report["summary"]
    assert parts["data"]["source"] == "folder" and parts["data"]["classes"] == 10
    assert parts["data"]["images"] == {"train": 160, "test": 40}  # 16 and 4 of each class
    assert parts["on_device_data"]["dataset"] == "imagefolder"
    assert parts["on_device_data"]["held"]["dtype"] == "torch.uint8"
    assert len(parts["train_fp32"]["epochs"]) == 2
    assert parts["train_amp_channels_last_compile"] == {"ok": True, "skipped": "--compile no"}
    assert report["parts"]["compile"]["compile_pays"] is None


def test_the_default_check_fits_a_six_minute_slot_start_up_included():
    """Start-up allowance + the default budget + the watchdog's grace + the exit allowance: the
    longest the default ``bash benchmarks/gpu_check.sh`` on a GPU can take."""
    with contextlib.ExitStack() as stack:
        default = Check(FULL, stack)  # no --budget, no --compile: what the script runs
    assert "train_amp_channels_last_compile" not in default.plan.parts  # opt-in on a GPU
    assert default.plan.budget_s == sum(budget.CHECK_PARTS.values())
    longest = budget.STARTUP_S + default.plan.budget_s + budget.GRACE_S + budget.EXIT_S
    assert longest <= budget.SLOT_S["check"] == 360
    assert default.left() + budget.GRACE_S <= 360 - budget.STARTUP_S - budget.EXIT_S
    assert longest == budget.worst_case_s(default.plan.budget_s)
    layout_longest = budget.worst_case_s(sum(budget.LAYOUT_PARTS.values()))
    assert layout_longest <= budget.SLOT_S["layout"] == 120


def test_compile_is_opt_in_on_a_gpu_and_rehearsed_in_the_dry_run():
    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    assert "--compile yes" in compile_skip_reason("auto", gpu)
    assert compile_skip_reason("yes", gpu) == "" and compile_skip_reason("auto", cpu) == ""
    assert compile_skip_reason("no", cpu) == "--compile no"
    with contextlib.ExitStack() as stack:
        opted = Check(FULL, stack, compile="yes")
    assert opted.plan.parts["train_amp_channels_last_compile"] == \
        budget.COMPILE_PART["train_amp_channels_last_compile"]
    assert list(opted.plan.parts)[-2:] == ["train_amp_channels_last_compile", "compile"]


def test_each_part_may_use_what_earlier_parts_left_but_not_what_later_parts_need():
    plan = budget.Plan({"a": 10.0, "b": 20.0, "c": 30.0})
    assert plan.deadline("a") - plan.start == pytest.approx(10)
    assert plan.deadline("b") - plan.start == pytest.approx(30)
    assert plan.deadline("c") == plan.end and plan.end - plan.start == pytest.approx(60)
    doubled = budget.Plan({"a": 10.0, "b": 20.0}, total_s=60)
    assert doubled.parts == {"a": 20.0, "b": 40.0}
    slow = budget.Plan({"a": 10.0, "b": 20.0}, startup_s=budget.STARTUP_S + 7)
    assert slow.end - slow.start == pytest.approx(30 - 7)  # a slow start-up comes off the end
    assert budget.Plan({"a": 10.0}, startup_s=1.0).startup_excess_s == 0


@pytest.mark.parametrize("args, needle", [
    (["--data", "{tmp}/missing.tar.gz"], "is not a file"),
    (["--data", "{tmp}/plain.txt"], "is not a tar archive"),
    (["--out", "{tmp}/plain.txt"], "is not a folder"),
    (["--epochs", "0"], "--epochs 0 must be at least 1"),
    (["--budget", "-5"], "--budget -5 must be a positive"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["--mode", "layout", "--epochs", "2"], "--epochs applies to --mode check only"),
    (["--mode", "layout", "--compile", "yes"], "--compile applies to --mode check only"),
    (["--mode", "speed"], "invalid choice: 'speed'"),
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
    # the rounds schedule prunes after each of the first 25 epochs: 26 models trained
    assert proto["prune_epochs"] == list(range(1, 26)) and proto["models_trained"] == 26
    bindings, same = train.short_bindings(proto, 3, manager)
    assert same and "train.epochs = 3" in bindings and "prune.rounds = 3" in bindings
    schedule = manager.registries["schedules"].build("rounds")
    target = schedule.plan(0.6, 25, 160, 1)[2].target
    assert f"prune.target = {target!r}" in bindings


def test_a_model_is_trained_after_every_prune_event_that_training_follows():
    assert train.models_trained(list(range(1, 26)), 160) == 26
    assert train.models_trained([], 160) == 1
    # at epoch 0 the first model is replaced before it trains; at the end nothing trains after
    assert train.models_trained([0, 5, 10], 10) == 2


def test_an_epoch_splits_into_warmup_steady_steps_a_tail_and_the_prune_event():
    stamps = {"start": 0.0, "warm": 6.0, "penultimate": 13.0, "trained": 14.25, "pruned": 16.25}
    parts = train.split_epoch(stamps, end=17.25, steps=13, warm=5)
    assert parts["step_s"] == 1.0  # 7 s for the 7 steps after the 5th, the last one apart
    assert parts["warmup_s"] == 1.0 and parts["tail_s"] == 0.25  # beyond 5 and 1 steady steps
    assert parts["prune_s"] == 2.0 and parts["epoch_s"] == 17.25
    assert parts["steady_epoch_s"] == 17.25 - 1.0 - 0.25 - 2.0
    slow_start = train.split_epoch({**stamps, "warm": 8.0}, end=17.25, steps=13, warm=5)
    assert slow_start["step_s"] == pytest.approx(5 / 7)
    assert slow_start["warmup_s"] == pytest.approx(8 - 5 * 5 / 7)
    # a short last batch is a new shape: compiled, its step compiles a second graph
    recompiled = train.split_epoch({**stamps, "trained": 44.0, "pruned": 46.0}, end=47.0,
                                   steps=13, warm=5)
    assert recompiled["step_s"] == 1.0 and recompiled["tail_s"] == 30.0
    few = train.split_epoch({"start": 0.0, "trained": 4.0}, end=4.0, steps=2, warm=0)
    assert few["step_s"] == 2.0 and few["tail_s"] == 0.0


def epoch(warmup: float, steady: float, prune: float, tail: float = 0.0,
          step: float = 0.01) -> dict:
    return {"warmup_s": warmup, "tail_s": tail, "steady_epoch_s": steady, "prune_s": prune,
            "step_s": step}


def test_the_protocol_is_extrapolated_from_start_ups_steady_epochs_and_prune_events():
    timed = [epoch(30.0, 9.0, 2.0, tail=1.0), epoch(10.0, 5.0, 1.0), epoch(0.5, 6.0, 3.0)]
    x = train.extrapolate(timed, PROTOCOL)
    assert (x["first_start_s"], x["restarts_timed_s"], x["restart_s"]) == (31.0, [10.0, 0.5], 0.5)
    assert (x["models_trained"], x["restarts_estimated"]) == (26, 23)
    assert (x["steady_epoch_s"], x["prune_event_s"]) == (5.5, 2.0)
    assert x["starts_s"] == 31 + 10.5 + 23 * 0.5
    assert x["full_protocol_s"] == 31 + 10.5 + 23 * 0.5 + 160 * 5.5 + 25 * 2.0
    alone = train.extrapolate(timed[:1], PROTOCOL)
    assert alone["full_protocol_s"] == 31 + 25 * 31 + 160 * 9 + 25 * 2
    assert "one model timed" in alone["caveat"]
    # an epoch on the model of the epoch before (no prune event between) starts nothing
    same_model = train.extrapolate([epoch(30.0, 9.0, 0.0), epoch(1.0, 5.0, 2.0)], PROTOCOL)
    assert same_model["restarts_timed_s"] == [] and same_model["steady_epoch_s"] == 6.0


def test_the_compiled_protocol_counts_one_compile_per_model_it_trains():
    """Made-up timings of a compiled short run (3 epochs, a prune event after each): the first
    compile, two recompiles seen, and the protocol's 1 + 25 models, each compiled."""
    timed = [epoch(40.0, 6.0, 2.0, tail=20.0, step=0.012),
             epoch(30.0, 5.0, 2.0, tail=15.0, step=0.010),
             epoch(28.0, 5.0, 2.0, tail=14.0, step=0.011)]
    x = train.extrapolate(timed, PROTOCOL)
    c = train.compiles(x, steps_per_epoch=391, graphs_per_model=2)
    assert c["models_compiled"] == 1 + len(PROTOCOL["prune_epochs"]) == 26
    assert c["graph_compiles"] == 52  # a short last batch: a second graph per model
    assert c["first_compile_s"] == 60.0 and c["recompiles_timed_s"] == [45.0, 42.0]
    assert c["recompile_s"] == 42.0 and c["recompiles_estimated"] == 26 - 3
    assert c["compile_s"] == 60 + 45 + 42 + 23 * 42
    assert c["compiled_steps"] == 160 * 391 and c["compiled_step_s"] == pytest.approx(0.0105)
    assert c["compiled_steps_s"] == pytest.approx(160 * 391 * 0.0105, abs=0.01)
    assert c["compile_s"] + c["compiled_steps_s"] + c["rest_s"] == \
        pytest.approx(x["full_protocol_s"], abs=0.02)
    assert x["full_protocol_s"] == pytest.approx(c["compile_s"] + 160 * 5.0 + 25 * 2.0)


def variant(full: float, steady: float, starts: float, step: float, **extra) -> dict:
    x = {"full_protocol_s": full, "steady_epoch_s": steady, "starts_s": starts, "step_s": step,
         "full_protocol_h": round(full / 3600, 3)}
    return {"ok": True, "extrapolation": x, **extra}


def compiled_variant(full: float, every_step: bool = True) -> dict:
    found = variant(full, 4.0, 1200.0, 0.008, steps=1173, compiled_steps=1173 if every_step
                    else 1100, every_step_compiled=every_step)
    found["extrapolation"]["compiles"] = {"models_compiled": 26, "graph_compiles": 52,
                                          "compile_s": 1200.0, "compiled_steps": 62560,
                                          "compiled_step_s": 0.008}
    return found


def test_the_compile_verdict_comes_from_the_counted_compiles_and_the_compiled_steps():
    eager = variant(3000.0, 10.0, 40.0, 0.02)
    fp32 = variant(5000.0, 20.0, 30.0, 0.04)
    pays = train.compare({"fp32": fp32, "amp_channels_last": eager,
                          "amp_channels_last_compile": compiled_variant(2500.0)})
    assert pays["compile_pays"] is True and pays["verdict"].startswith("torch.compile pays")
    assert "26 models compiled (52 graphs)" in pays["verdict"]
    assert pays["break_even"] == {"extra_start_up_s": 1160.0, "saved_per_epoch_s": 6.0,
                                  "epochs_to_repay": 193.3}
    costly = train.compare({"amp_channels_last": eager,
                            "amp_channels_last_compile": compiled_variant(3100.0)})
    assert costly["compile_pays"] is False
    assert costly["verdict"].startswith("torch.compile does not pay")
    eager_steps = train.compare({"amp_channels_last": eager,
                                 "amp_channels_last_compile": compiled_variant(2500.0, False)})
    assert eager_steps["compile_pays"] is None
    assert eager_steps["verdict"].startswith("undetermined: 73 of the compiled run's 1173 steps")
    skipped = train.compare({"amp_channels_last": eager, "amp_channels_last_compile": {
        "ok": True, "skipped": "--compile no"}})
    assert skipped["compile_pays"] is None and "was skipped (--compile no)" in skipped["verdict"]


def tiny_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def test_the_decisions_of_a_prune_event_are_read_back_from_tagged_filters():
    model = tiny_cnn()
    names = ["0.weight", "3.weight", "8.weight"]
    scores = {"0.weight": torch.tensor([5.0, 0.1, 6.0, 0.2, 7.0, 0.3, 8.0, 9.0]),
              "3.weight": torch.arange(10.0, 18.0), "8.weight": torch.full((4,), 20.0)}
    rankings.tag_filters(model, names)
    fp.prune(model, probes.GivenScores(scores), (), 0.15, example_inputs=torch.zeros(1, 3, 8, 8))
    kept = rankings.kept_filters(model, names)
    assert model[0].out_channels < 8  # the lowest-scored filters of the first conv went
    assert kept["0.weight"] == {0, 2, 4, 6, 7} | ({5} if model[0].out_channels == 6 else set())
    assert kept["3.weight"] == set(range(8)) and kept["8.weight"] == set(range(4))


def test_tf32_rankings_are_compared_by_rank_correlation_and_changed_decisions():
    fp32 = {"a": torch.tensor([1.0, 2.0, 3.0, 4.0]), "b": torch.tensor([5.0, 6.0])}
    same = rankings.compare(fp32, {k: v.clone() for k, v in fp32.items()},
                            {"a": {2, 3}, "b": {0, 1}}, {"a": {2, 3}, "b": {0, 1}})
    assert same == {"filters": 6, "spearman": 1.0, "decisions_differ": 0.0,
                    "filters_decided_differently": 0, "identical_scores": True,
                    "max_abs_change_over_max_score": 0.0}
    swapped = {"a": torch.tensor([1.0, 3.0, 2.0, 4.0]), "b": fp32["b"]}
    moved = rankings.compare(fp32, swapped, {"a": {2, 3}, "b": {0, 1}},
                             {"a": {1, 3}, "b": {0, 1}})
    assert 0 < moved["spearman"] < 1 and not moved["identical_scores"]
    assert moved["filters_decided_differently"] == 2
    assert moved["decisions_differ"] == pytest.approx(2 / 6)
    assert rankings.spearman(torch.ones(3), torch.arange(3.0)) is None  # a constant side
    assert rankings.spearman(torch.tensor([1.0, float("nan"), 2.0, 3.0]),
                             torch.tensor([1.0, 5.0, 2.0, 3.0])) == 1.0  # NaNs left out


def test_the_layout_mode_stands_for_torch_pruning_with_a_contiguous_copy():
    model = tiny_cnn().to(memory_format=torch.channels_last)
    fp.prune(model, "magnitude", (), 0.2, example_inputs=torch.zeros(1, 3, 8, 8))
    kept = channels_last_names(model)
    assert kept == ["0.weight", "3.weight"]  # surgery kept the layout
    flat = layout.as_torch_pruning_leaves_it(model)
    assert channels_last_names(flat) == [] and channels_last_names(model) == kept
    assert all(p.is_contiguous() for p in flat.parameters())
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(flat.eval()(x), model.eval()(x), atol=1e-6)  # the same function


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
                if node.module == "fp":
                    imported.update(f"fp.{a.name}" for a in node.names
                                    if f"fp.{a.name}" in PUBLIC or a.name not in fp.__all__)
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and node.value.id == "fp"):
                used.add(node.attr)
    private = {m for m in imported if m.split(".")[0] == "fp" and not any(
        m == api or (api != "fp" and m.startswith(api + ".")) for api in PUBLIC)}
    assert private == set()
    assert used and used <= set(fp.__all__), used - set(fp.__all__)
