"""``fp eval``: accuracy, size, latency and throughput of a saved pruned model against its dense
architecture, through ``evaluate``, the ``fp`` entry point and the installed console script."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console

import fp
from fp import pruning
from fp.cli import main
from fp.errors import CheckpointError, ConfigError
from fp.tools import evaluate as evaluate_module
from fp.tools.evaluate import evaluate, format_eval

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = str(REPO / "gin" / "quickstart.gin")
FAST = {"warmup": 0, "repeats": 2, "batch_size": 128, "max_batch": 8}
FP = Path(sys.executable).with_name("fp")
SPEED = ("latency_ms", "dense_latency_ms", "latency_speedup", "images_per_s",
         "dense_images_per_s", "throughput_speedup")


@pytest.fixture(scope="module")
def pruned_model_file(tmp_path_factory) -> Path:
    """small_cnn for 1-channel 10-class images with half of its filters removed by magnitude."""
    torch.manual_seed(0)
    model = pruning.build_model("small_cnn", num_classes=10, in_channels=1)
    batch = (torch.randn(8, 1, 16, 16), torch.randint(0, 10, (8,)))
    fp.prune(model, "magnitude", [batch], 0.5)
    return fp.save(model, tmp_path_factory.mktemp("model") / "pruned.pt")


@pytest.fixture(scope="module")
def result(pruned_model_file) -> dict:
    return evaluate(pruned_model_file, dataset="digits", **FAST)


@pytest.fixture
def run_dir(tmp_path, pruned_model_file) -> Path:
    """A finished run's directory, as far as ``fp eval`` reads it."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(pruned_model_file.read_bytes())
    (run / "config.gin").write_text("data.dataset = 'digits'\nmodel.architecture = 'small_cnn'\n")
    (run / "summary.json").write_text(json.dumps({"dataset": "digits", "device": "cpu"}))
    return run


def test_a_model_file_is_evaluated_on_the_named_dataset(result, pruned_model_file):
    assert result["dataset"] == "digits" and result["architecture"] == "small_cnn"
    assert result["device"] == "cpu" and result["batch_size"] == 128
    assert result["test_samples"] == 360  # digits' fixed 20% test split
    assert 0.0 <= result["test_acc"] <= 1.0
    dense = pruning.build_model("small_cnn", num_classes=10, in_channels=1)
    assert result["dense_params"] == pruning.count_params(dense)
    assert result["params"] == pruning.count_params(fp.load(pruned_model_file))
    assert result["params"] < result["dense_params"]
    assert 0 < result["flops"] < result["dense_flops"]


def test_both_models_are_timed_at_batch_1_and_at_the_dense_saturating_batch(result):
    assert all(result[key] > 0 for key in SPEED)
    assert result["latency_speedup"] == pytest.approx(result["dense_latency_ms"] / result["latency_ms"])
    assert result["speedup"] == result["latency_speedup"]
    assert result["throughput_speedup"] == pytest.approx(result["images_per_s"] / result["dense_images_per_s"])
    assert (result["dtype"], result["precision"], result["channels_last"]) == ("float32", "float32", False)
    latency, throughput = result["timings"]["latency"], result["timings"]["throughput"]
    assert latency["dense"]["batch"] == latency["pruned"]["batch"] == 1
    batch = result["throughput_batch"]
    assert throughput["dense"]["batch"] == throughput["pruned"]["batch"] == batch
    curves = result["saturation"]
    assert batch in [b for b, _ in curves["dense"]] and max(b for b, _ in curves["dense"]) <= 8
    assert result["pruned_saturating_batch"] in [b for b, _ in curves["pruned"]]
    timings = [t for pair in result["timings"].values() for t in pair.values()]
    assert all(t["repeats"] == 2 and t["device"] == "cpu" and t["spread"] >= 0 for t in timings)
    assert throughput["pruned"]["images_per_s"] == result["images_per_s"]
    assert result["max_spread"] == max(t["spread"] for t in timings)
    json.dumps(result)  # plain data


def test_bfloat16_and_channels_last_are_used_and_stated(pruned_model_file):
    result = evaluate(pruned_model_file, dataset="digits", dtype="bfloat16", channels_last=True, **FAST)
    assert (result["dtype"], result["precision"], result["channels_last"]) == (
        "bfloat16", "bfloat16 autocast", True)
    assert result["timings"]["latency"]["pruned"]["dtype"] == "bfloat16"
    with pytest.raises(ConfigError, match="--dtype 'half' is not supported; use float32 or bfloat16"):
        evaluate(pruned_model_file, dataset="digits", dtype="half")


def test_the_runs_device_is_the_default_and_a_missing_one_is_a_config_error(run_dir):
    assert evaluate(run_dir, **FAST)["device"] == "cpu"
    (run_dir / "summary.json").write_text(json.dumps({"dataset": "digits", "device": "cuda:9"}))
    with pytest.raises(ConfigError, match="the run's device 'cuda:9' .* pass --device"):
        evaluate(run_dir, **FAST)
    assert evaluate(run_dir, device="cpu", **FAST)["device"] == "cpu"


def test_a_run_directory_rebuilds_its_dataset_from_config_gin(tmp_path, pruned_model_file):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "model.pt").write_bytes(pruned_model_file.read_bytes())
    # digits at 8x8 (not the default 16x16): only config.gin says so
    (run_dir / "config.gin").write_text("data.dataset = 'digits'\ndigits.size = 8\n"
                                        "model.architecture = 'small_cnn'\n")
    result = evaluate(run_dir, **FAST)
    dense = pruning.build_model("small_cnn", num_classes=10, in_channels=1)
    assert result["dense_flops"] == pruning.count_flops(dense, torch.zeros(1, 1, 8, 8))
    assert result["dataset"] == "digits" and result["test_samples"] == 360


def test_a_run_directory_without_config_gin_uses_the_summary_dataset(tmp_path, pruned_model_file):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "model.pt").write_bytes(pruned_model_file.read_bytes())
    (run_dir / "summary.json").write_text(json.dumps({"dataset": "digits"}))
    assert evaluate(run_dir, **FAST)["dataset"] == "digits"


def test_a_model_file_without_a_dataset_is_a_config_error(pruned_model_file):
    with pytest.raises(ConfigError, match="needs --dataset"):
        evaluate(pruned_model_file)


def test_a_dataset_the_model_was_not_built_for_is_a_config_error(pruned_model_file):
    with pytest.raises(ConfigError, match="in_channels=1 but dataset 'synthetic' has 3"):
        evaluate(pruned_model_file, dataset="synthetic", **FAST)


def test_a_run_without_model_pt_is_a_checkpoint_error_naming_the_file(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(CheckpointError, match=str(tmp_path / "run" / "model.pt")):
        evaluate(tmp_path / "run")
    with pytest.raises(CheckpointError, match="neither a run directory nor a saved model"):
        evaluate(tmp_path / "nothing_here.pt", dataset="digits")


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"repeats": 0}, {"warmup": -1}])
def test_nonsense_counts_are_config_errors(pruned_model_file, bad):
    with pytest.raises(ConfigError, match="must be an integer of at least"):
        evaluate(pruned_model_file, dataset="digits", **bad)


def test_the_table_shows_sizes_speed_ups_and_how_they_were_measured(result):
    console = Console(record=True, width=250)
    console.print(format_eval(result))
    text = console.export_text()
    assert f"{100 * result['test_acc']:.2f}%" in text and f"{result['params']:,}" in text
    assert f"{result['params'] / result['dense_params']:.1%}" in text
    assert "latency (ms, batch 1)" in text and f"{result['latency_speedup']:.2f}x speed-up" in text
    assert f"throughput (images/s, batch {result['throughput_batch']})" in text
    assert f"{result['throughput_speedup']:.2f}x speed-up" in text
    assert "timed on cpu in float32, contiguous (NCHW)" in text and "medians of 2 repeats" in text
    assert f"at most {result['max_spread']:.1%}" in text


def test_the_pruned_models_own_saturating_batch_is_shown_when_it_differs(result):
    other = dict(result, pruned_saturating_batch=2 * result["throughput_batch"],
                 pruned_saturating_images_per_s=12345.0, pruned_saturating_speedup=3.25)
    console = Console(record=True, width=250)
    console.print(format_eval(other))
    text = console.export_text()
    assert f"pruned at its own batch {2 * result['throughput_batch']}" in text
    assert "12,345" in text and "3.25x speed-up" in text


def fast_speed(monkeypatch):
    """``fp eval`` timing on a small budget: no repeats beyond the minimum, batches up to 8."""
    real = evaluate_module.measure_speed
    monkeypatch.setattr(evaluate_module, "measure_speed",
                        lambda *a, **k: real(*a, **{**k, "min_time_s": 0.0, "max_batch": 8}))


def fp_main(*args: str) -> None:
    try:
        main(list(args))
    except SystemExit as exc:  # typer exits when the command is done
        assert exc.code in (0, None)


def test_fp_eval_prints_json_and_a_table(run_dir, monkeypatch, capsys):
    fast_speed(monkeypatch)
    monkeypatch.setenv("FP_DISABLE_PLUGIN_AUTOLOAD", "1")
    fp_main("eval", str(run_dir), "--json", "--dtype", "bfloat16", "--channels-last")
    result = json.loads(capsys.readouterr().out)
    assert all(result[key] > 0 for key in SPEED) and result["device"] == "cpu"
    assert result["dtype"] == "bfloat16" and result["channels_last"] is True
    monkeypatch.setenv("COLUMNS", "250")
    fp_main("eval", str(run_dir))
    text = capsys.readouterr().out
    assert text.count("speed-up") >= 2 and "latency (ms, batch 1)" in text
    assert "throughput (images/s, batch" in text and "in float32, contiguous (NCHW)" in text


@pytest.mark.skipif(not FP.exists(), reason=f"no installed fp console script at {FP}")
def test_a_bad_dtype_is_one_line_and_exit_2(run_dir, installed_fp):
    done = installed_fp("eval", str(run_dir), "--dtype", "float16")
    assert done.returncode == 2 and "Traceback" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == ["error: --dtype 'float16' is not supported; use float32 or bfloat16."]


@pytest.mark.slow
@pytest.mark.skipif(not FP.exists(), reason=f"no installed fp console script at {FP}")
def test_the_installed_fp_eval_reports_both_speed_ups(run_dir, installed_fp):
    done = installed_fp("eval", str(run_dir), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert all(result[key] > 0 for key in SPEED)
    assert result["timings"]["throughput"]["dense"]["batch"] == result["throughput_batch"]


@pytest.mark.slow
def test_a_real_run_evaluates_to_its_recorded_accuracy(tmp_path):
    from fp.engine import run_experiment

    outcome = run_experiment([QUICKSTART], ["train.epochs=2", "prune.rounds=1", "prune.samples=128"],
                  out=tmp_path / "run", quiet=True)
    result = evaluate(tmp_path / "run", **FAST)
    assert result["test_acc"] == pytest.approx(outcome.summary["test_acc"], abs=1e-6)
    assert result["params"] == outcome.summary["params"]
    assert result["dense_params"] == outcome.summary["dense_params"]
    assert result["flops"] == outcome.summary["flops"]
