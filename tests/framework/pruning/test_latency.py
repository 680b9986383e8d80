"""Forward timing (fp.timing): the shape of its results on a tiny CPU model, the inputs
the model really sees, the caller's model left alone, interleaving, and the batch search driven
by a fake clock so that its stopping rules are exercised exactly."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from fp.errors import ConfigError
from fp import timing
from fp.timing import ForwardTiming, saturating_batch, time_forward, time_forward_pair

EXAMPLE = torch.randn(3, 8, 8)
FAST = {"device": "cpu", "warmup": 1, "min_time_s": 0.0}


def tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


class Recorder(nn.Module):
    """Keeps what each forward pass was given and what its convolution returned."""

    def __init__(self, log: list | None = None, name: str = ""):
        super().__init__()
        self.conv, self.log, self.name = nn.Conv2d(3, 4, 1), log if log is not None else [], name
        self.seen: list[dict] = []

    def forward(self, x):
        y = self.conv(x)
        self.seen.append({"x": x.detach().clone(), "training": self.training, "out": y.dtype,
                          "channels_last": x.is_contiguous(memory_format=torch.channels_last),
                          "grad": torch.is_grad_enabled()})
        self.log.append(self.name)
        return y


class Costly(nn.Module):
    """Advances a fake clock by ``cost(batch)`` seconds per forward pass; ``fail_above`` makes
    batches larger than it fail as the GPU's allocator would."""

    def __init__(self, now: list[float], cost, fail_above: int | None = None, error=None):
        super().__init__()
        self.now, self.cost, self.fail_above, self.error = now, cost, fail_above, error
        self.linear = nn.Linear(1, 1)
        self.batches: list[int] = []

    def forward(self, x):
        self.batches.append(len(x))
        if self.fail_above is not None and len(x) > self.fail_above:
            raise self.error
        self.now[0] += self.cost(len(x))
        return x


@pytest.fixture
def now(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(timing, "clock", lambda: clock[0])
    return clock


def test_a_timing_has_positive_consistent_numbers():
    t = time_forward(tiny(), EXAMPLE, 4, **FAST)
    assert isinstance(t, ForwardTiming) and t.batch == 4 and t.device == "cpu"
    assert t.dtype == "float32" and t.precision == "float32" and t.channels_last is False
    assert t.median_s > 0 and t.spread >= 0 and t.repeats == len(t.times_s) >= timing.MIN_REPEATS
    assert t.images_per_s == pytest.approx(4 / t.median_s)
    assert dataclasses.asdict(t)["images_per_s"] == t.images_per_s
    assert time_forward(tiny(), EXAMPLE, 2, **dict(FAST, repeats=7)).repeats == 7


def test_repeats_fill_the_time_budget_within_bounds(now):
    model = Costly(now, lambda batch: 0.125)  # exact in binary: the sums are exact too
    assert time_forward(model, EXAMPLE, 1, device="cpu", warmup=0, min_time_s=2.0).repeats == 16
    assert time_forward(model, EXAMPLE, 1, device="cpu", min_time_s=0.0).repeats == timing.MIN_REPEATS
    capped = time_forward(model, EXAMPLE, 1, device="cpu", min_time_s=100, max_repeats=30)
    assert capped.repeats == 30 and capped.median_s == 0.125 and capped.spread == 0


def test_the_model_sees_the_example_repeated_in_eval_mode_without_autograd():
    model = Recorder().train()
    batch = torch.randn(5, 3, 8, 8)  # a batch: its first image is the example
    time_forward(model, batch, 3, **dict(FAST, repeats=2))
    seen = model.seen[-1]
    assert seen["x"].shape == (3, 3, 8, 8) and torch.equal(seen["x"][2], batch[0])
    assert not seen["training"] and not seen["grad"] and seen["out"] == torch.float32
    assert model.training  # the caller's flags are back


def test_bfloat16_and_channels_last_run_on_cpu_without_touching_the_callers_model():
    model = Recorder().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    t = time_forward(model, EXAMPLE, 2, dtype="bfloat16", channels_last=True, **FAST)
    assert t.dtype == "bfloat16" and t.precision == "bfloat16 autocast" and t.channels_last
    assert model.seen == []  # a converted copy was timed
    assert model.training and model.conv.weight.dtype == torch.float32
    assert model.conv.weight.is_contiguous()  # not turned channels-last
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    probe = Recorder()
    with timing.ready(probe, device="cpu", dtype=torch.bfloat16, channels_last=True) as r:
        r.once(r.inputs(EXAMPLE, 2))
        seen = r.model.seen[-1]
    assert seen["channels_last"] and seen["out"] == torch.bfloat16 and seen["x"].dtype == torch.float32


def test_bfloat16_weights_where_autocast_is_unavailable(monkeypatch):
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda kind: False)
    model = Recorder()
    with timing.ready(model, device="cpu", dtype="bfloat16") as r:
        assert r.precision == "bfloat16 weights" and r.model is not model
        r.once(r.inputs(EXAMPLE, 2))
        assert r.model.seen[-1]["x"].dtype == torch.bfloat16
    assert model.conv.weight.dtype == torch.float32


def test_an_unknown_dtype_is_a_config_error():
    with pytest.raises(ConfigError, match="'float16' cannot be timed; use one of float32, bfloat16"):
        time_forward(tiny(), EXAMPLE, 1, dtype="float16", **FAST)


def test_a_pair_interleaves_dense_and_pruned():
    log: list[str] = []
    dense, pruned = Recorder(log, "d"), Recorder(log, "p")
    a, b = time_forward_pair(dense, pruned, EXAMPLE, 2, **dict(FAST, repeats=4))
    assert log == ["d", "p"] + ["d", "p", "p", "d"] * 2  # a warm-up round, then A B B A ...
    assert (a.batch, b.batch, a.repeats, b.repeats) == (2, 2, 4, 4)
    assert a.median_s > 0 and b.median_s > 0


def test_a_pair_of_real_models_gives_two_timings():
    a, b = time_forward_pair(tiny(), tiny(), EXAMPLE, 2, **FAST)
    assert a.repeats == b.repeats >= timing.MIN_REPEATS and a.images_per_s > 0 < b.images_per_s


def test_the_batch_search_stops_where_throughput_saturates(now):
    model = Costly(now, lambda batch: max(0.001, 1e-4 * batch))  # at most 10,000 images/s
    batch, curve = saturating_batch(model, EXAMPLE, device="cpu", min_time_s=0.0)
    assert [b for b, _ in curve] == [1, 2, 4, 8, 16, 32, 64]  # two doublings without gain
    assert [round(ips) for _, ips in curve] == [1000, 2000, 4000, 8000, 10000, 10000, 10000]
    assert batch == 16  # the smallest batch within 5% of the best


def test_one_noisy_doubling_does_not_end_the_search(now):
    costs = {1: 1.0, 2: 2.0, 4: 2.0, 8: 2.0, 16: 4.0, 32: 8.0}  # batch 2 gains nothing, 4 does
    batch, curve = saturating_batch(Costly(now, costs.get), EXAMPLE, device="cpu", min_time_s=0)
    assert [b for b, _ in curve] == [1, 2, 4, 8, 16, 32] and batch == 8
    short, _ = saturating_batch(Costly(now, costs.get), EXAMPLE, device="cpu", patience=1)
    assert short == 1


def test_the_batch_search_stops_at_max_batch(now):
    batch, curve = saturating_batch(Costly(now, lambda b: 0.001), EXAMPLE, device="cpu",
                                    start=2, max_batch=40, min_time_s=0)
    assert [b for b, _ in curve] == [2, 4, 8, 16, 32] and batch == 32


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate"),
                                   RuntimeError("CUDA error: out of memory")])
def test_out_of_memory_stops_the_search_at_the_last_good_batch(now, error):
    model = Costly(now, lambda b: 0.001, fail_above=8, error=error)
    batch, curve = saturating_batch(model, EXAMPLE, device="cpu", min_time_s=0)
    assert batch == 8 and [b for b, _ in curve] == [1, 2, 4, 8]
    assert max(model.batches) == 16  # it was tried once, and nothing larger after it


def test_out_of_memory_at_the_first_batch_and_other_errors_are_raised(now):
    first = Costly(now, lambda b: 0.001, fail_above=0, error=torch.cuda.OutOfMemoryError("oom"))
    with pytest.raises(torch.cuda.OutOfMemoryError):
        saturating_batch(first, EXAMPLE, device="cpu")
    bug = Costly(now, lambda b: 0.001, fail_above=2, error=RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        saturating_batch(bug, EXAMPLE, device="cpu")


def test_the_batch_search_on_a_real_model_returns_a_batch_of_its_curve():
    model = tiny().train()
    batch, curve = saturating_batch(model, EXAMPLE, max_batch=64, **FAST)
    assert batch in [b for b, _ in curve] and all(ips > 0 for _, ips in curve)
    assert [b for b, _ in curve] == [2 ** i for i in range(len(curve))] and model.training


def test_nonsense_search_bounds_are_config_errors():
    with pytest.raises(ConfigError, match="saturating_batch needs"):
        saturating_batch(tiny(), EXAMPLE, device="cpu", start=0)
