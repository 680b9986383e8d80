"""``fp run`` with ``prune.target_type = "latency"``: probes in metrics.jsonl and TensorBoard, the
dense and final latencies in summary.json; an injected deterministic latency model, then one real
CPU run timed on this machine."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fp.engine.experiment import run_experiment
from fp.pruning import count_flops

QUICKSTART = str(Path(__file__).resolve().parents[2] / "gin" / "quickstart.gin")
LATENCY = ["prune.target_type='latency'", "prune.target=0.5", "train.epochs=3", "prune.rounds=2",
           "prune.samples=128", "digits.size=8", "flow.enabled=False"]


def records(out: Path, event: str) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("event") == event]


@pytest.fixture
def flops_timed(monkeypatch):
    """Every latency the run measures is 1 µs + 1 ns per FLOP of one 8x8 image, noise-free; the
    batch it was asked for is recorded."""
    asked = []

    def measured_latency(example, batch=1, device=None, **timing):
        asked.append(batch)
        return lambda model: (1e-6 + 1e-9 * count_flops(model, example), 0.0)

    monkeypatch.setattr("fp.pruning.measured_latency", measured_latency)
    return asked


def test_a_latency_run_ends_at_its_target_and_records_every_probe(tmp_path, flops_timed):
    out = tmp_path / "run"
    outcome = run_experiment([QUICKSTART], [*LATENCY, "prune.latency_batch=16"], out=out,
                             device="cpu", quiet=True)
    summary = outcome.summary
    assert flops_timed == [16, 16]  # one latency_fn per event, at the batch asked for
    assert summary["latency_batch"] == 16 and summary["latency_target"] == 0.5
    assert summary["final_latency_s"] <= 0.5 * summary["dense_latency_s"]
    assert summary["latency_ratio"] == pytest.approx(
        summary["final_latency_s"] / summary["dense_latency_s"])
    probes = records(out, "latency_probe")
    assert {p["index"] for p in probes} == {1, 2}
    assert summary["latency_probes"] == len(probes) <= 2 * 8
    for index in (1, 2):
        event = [p for p in probes if p["index"] == index]
        assert [p["probe"] for p in event] == list(range(1, len(event) + 1))
        assert sum(p["accepted"] for p in event) == 1
        assert all(p["meets_target"] == (p["ratio"] <= 1 - p["target"]) for p in event)
    prune_records = records(out, "prune")
    first, final = (r["latency_target"] for r in prune_records)  # rounds: cumulative targets
    assert 0 < first < final == 0.5
    assert prune_records[0]["latency_ratio"] <= 1 - first
    last = prune_records[-1]
    assert last["final_latency_s"] == summary["final_latency_s"]
    assert last["latency_ratio"] <= 0.5
    events = EventAccumulator(str(out))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"latency/ratio", "latency/final_ms", "latency/event_1/ratio"} <= set(tags)
    assert events.Scalars("latency/ratio")[-1].value == pytest.approx(last["latency_ratio"])


def test_without_a_latency_batch_the_dense_models_saturating_batch_is_used(tmp_path, flops_timed,
                                                                             monkeypatch):
    searched = []

    def saturating_batch(model, example, **kwargs):
        searched.append(kwargs)
        return 32, [(1, 10.0), (32, 100.0), (64, 101.0)]

    monkeypatch.setattr("fp.timing.saturating_batch", saturating_batch)
    outcome = run_experiment([QUICKSTART], LATENCY, out=tmp_path / "run", device="cpu", quiet=True)
    assert len(searched) == 1 and searched[0]["dtype"] == "float32"
    assert flops_timed == [32, 32] and outcome.summary["latency_batch"] == 32


def test_an_unreachable_latency_target_fails_the_run_with_one_sentence(tmp_path, monkeypatch):
    from fp.errors import PruningError

    monkeypatch.setattr("fp.pruning.measured_latency",
                        lambda example, batch=1, **kw: lambda model: (1.0, 0.0))  # never faster
    with pytest.raises(PruningError, match="cannot be reached"):
        run_experiment([QUICKSTART], [*LATENCY, "prune.latency_batch=4"], out=tmp_path / "run",
                       device="cpu", quiet=True)


@pytest.mark.slow
def test_a_real_cpu_run_halves_its_measured_latency(tmp_path):
    outcome = run_experiment([QUICKSTART], [*LATENCY, "prune.rounds=1"], out=tmp_path / "run",
                             device="cpu", quiet=True)
    summary = outcome.summary
    # the final choice was timed interleaved with the dense model; its ratio may exceed the
    # target by no more than the noise that timing reported
    assert summary["final_latency_s"] <= (0.5 * summary["dense_latency_s"]
                                          * (1 + summary["latency_noise"]))
    assert summary["latency_batch"] >= 1 and summary["filters_kept"] < summary["dense_filters"]
