"""``fp eval``: accuracy, size and latency of a saved pruned model against its dense architecture."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rich.console import Console

import fp
from fp import pruning
from fp.errors import CheckpointError, ConfigError
from fp.tools.evaluate import evaluate, format_eval

QUICKSTART = str(Path(__file__).resolve().parents[2] / "gin" / "quickstart.gin")
FAST = {"warmup": 0, "repeats": 2, "batch_size": 128}


@pytest.fixture(scope="module")
def pruned_model_file(tmp_path_factory) -> Path:
    """small_cnn for 1-channel 10-class images with half of its filters removed by magnitude."""
    torch.manual_seed(0)
    model = pruning.build_model("small_cnn", num_classes=10, in_channels=1)
    batch = (torch.randn(8, 1, 16, 16), torch.randint(0, 10, (8,)))
    fp.prune(model, "magnitude", [batch], 0.5)
    return fp.save(model, tmp_path_factory.mktemp("model") / "pruned.pt")


def test_a_model_file_is_evaluated_on_the_named_dataset(pruned_model_file):
    result = evaluate(pruned_model_file, dataset="digits", **FAST)
    assert result["dataset"] == "digits" and result["architecture"] == "small_cnn"
    assert result["device"] == "cpu" and result["batch_size"] == 128
    assert result["test_samples"] == 360  # digits' fixed 20% test split
    assert 0.0 <= result["test_acc"] <= 1.0
    dense = pruning.build_model("small_cnn", num_classes=10, in_channels=1)
    assert result["dense_params"] == pruning.count_params(dense)
    assert result["params"] == pruning.count_params(fp.load(pruned_model_file))
    assert result["params"] < result["dense_params"]
    assert 0 < result["flops"] < result["dense_flops"]
    assert result["latency_ms"] > 0 and result["dense_latency_ms"] > 0
    assert result["speedup"] == pytest.approx(result["dense_latency_ms"] / result["latency_ms"])


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


def test_the_table_shows_pruned_against_dense():
    result = {"model": "runs/x/model.pt", "architecture": "small_cnn", "dataset": "digits",
              "device": "cpu", "batch_size": 256, "warmup": 5, "repeats": 20, "test_acc": 0.9123,
              "test_samples": 360, "params": 40_000, "dense_params": 160_000, "flops": 1_000_000,
              "dense_flops": 4_000_000, "latency_ms": 2.0, "dense_latency_ms": 5.0, "speedup": 2.5}
    console = Console(record=True, width=200)
    console.print(format_eval(result))
    text = console.export_text()
    assert "91.23%" in text and "40,000" in text and "160,000" in text and "25.0%" in text
    assert "batch 256" in text and "cpu" in text and "speedup 2.50x" in text


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
