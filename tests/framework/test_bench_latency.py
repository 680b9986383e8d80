"""``fp bench``'s latency_target row: the latency-target prune re-timed against the dense model."""
from __future__ import annotations

import statistics

import pytest
import torch
from rich.console import Console

from fp.pruning import build_model, count_flops
from fp.tools.bench import format_rows
from fp.tools.bench.latency_row import TARGET, latency_target_row


def test_the_row_compares_the_pruned_latency_with_the_target(monkeypatch):
    # the prune searches on a FLOP count, so it always reaches the target; the row's own
    # timing, which it reports, is real
    monkeypatch.setattr("fp.pruning.api.measured_latency", lambda example, batch=1, **kw:
                        lambda model: (1e-6 + 1e-9 * count_flops(model, example), 0.0))
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, in_channels=3)
    batches = [(torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,)))]
    row = latency_target_row(model, batches, batch_size=16, device=torch.device("cpu"))
    assert row["name"] == "latency_target" and row["target"] == f"<= {1 - TARGET:g}"
    pairs = [m / b for m, b in zip(row["runs_s"]["measured"], row["runs_s"]["baseline"])]
    # the row keeps the ratio to 4 decimals: a tiny ratio (a host stalling the dense timing)
    # differs from its pairs' median by up to half the last decimal
    assert row["ratio"] == pytest.approx(statistics.median(pairs), rel=2e-3, abs=5e-5)
    assert row["ok"] == (row["ratio"] <= 1 - TARGET)
    assert len(row["runs_s"]["measured"]) == len(row["runs_s"]["baseline"]) >= 5
    assert "probes" in row["notes"] and "batch 16" in row["notes"]
    widths = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths == [32, 64, 64, 128]  # the caller's model is left dense


def test_an_unreachable_target_fails_the_row_and_says_why(monkeypatch):
    monkeypatch.setattr("fp.pruning.api.measured_latency",
                        lambda example, batch=1, **kw: lambda model: (1.0, 0.0))  # never faster
    model = build_model("small_cnn", num_classes=10, in_channels=3)
    batches = [(torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,)))]
    row = latency_target_row(model, batches, batch_size=4, device=torch.device("cpu"))
    assert row["ok"] is False and row["ratio"] is None and not row["skipped"]
    assert "cannot be reached" in row["notes"]
    console = Console(record=True, width=300)
    console.print(format_rows([row]))
    assert "NO" in console.export_text()
