"""What is measured once per process: the scoring passes' image layout (the same statistics in
either layout, "auto" decided once per model structure from timings, patched here: the tests never
depend on this machine's speed), and the model key and cache every such choice shares."""
import pytest
import torch
from torch import nn

from fp.errors import ConfigError
from fp.scoring import ScoreContext, score
from fp.scoring import autotune
from fp.scoring.autotune import time_layouts as real_timing  # imported before the conftest patches

CL = torch.channels_last


def timed(monkeypatch, contiguous: float, channels_last: float) -> list:
    calls = []

    def fake(model, batch, temperature, shortcuts="off"):
        calls.append(tuple(batch[0].shape))
        return {"contiguous": contiguous, "channels_last": channels_last}
    monkeypatch.setattr(autotune, "time_layouts", fake)
    return calls


def statistics(ctx: ScoreContext) -> dict:
    return {"g": ctx.grad(), "g_sq": ctx.grad_sq(), "hg": ctx.hess_grad(),
            "filter_hg": ctx.filter_hess_grad()}


@pytest.mark.parametrize("method", ["double_backward", "forward_over_reverse"])
def test_every_statistic_is_the_same_in_either_layout(model, tiny_factory, method):
    _, make_batches = tiny_factory
    found = {}
    for chosen in ("contiguous", "channels_last"):
        ctx = ScoreContext(model, make_batches(), layout=chosen, hvp_method=method)
        found[chosen] = statistics(ctx)
        assert ctx.info["scoring_layout"] == chosen
        assert ctx.batches[0][0].is_contiguous(memory_format=CL) == (chosen == "channels_last")
    for kind, values in found["contiguous"].items():
        for name, value in values.items():
            torch.testing.assert_close(found["channels_last"][kind][name], value,
                                       rtol=1e-10, atol=1e-12, msg=f"{kind} of {name}")


def test_auto_takes_channels_last_only_when_it_is_clearly_faster(monkeypatch, model, batches):
    for cl_seconds, expected in ((0.9, "channels_last"), (0.99, "contiguous"), (1.2, "contiguous")):
        monkeypatch.setattr(autotune, "LAYOUT_CHOICES", autotune.Measured())
        timed(monkeypatch, 1.0, cl_seconds)
        ctx = ScoreContext(model, batches)
        ctx.grad()
        assert ctx.info["scoring_layout"] == expected
        assert ctx.info["scoring_layout_s"] == {"contiguous": 1.0, "channels_last": cl_seconds}


def test_auto_times_once_per_model_and_views_share_the_layout(monkeypatch, model,
                                                                  tiny_factory):
    make_tiny, make_batches = tiny_factory
    calls = timed(monkeypatch, 1.0, 0.5)
    ctx = ScoreContext(model, make_batches())
    hot = ctx.for_temperature(50.0)
    hot.grad()
    assert ctx.batches[0][0].is_contiguous(memory_format=CL)  # the view's choice is the context's
    ctx.grad()
    again = ScoreContext(make_tiny(seed=3), make_batches())  # same structure, other weights
    again.grad()
    assert len(calls) == 1 and "scoring_layout_s" not in again.info
    assert again.info["scoring_layout"] == "channels_last"
    narrower = make_tiny()  # as pruning leaves it: the same modules, fewer filters
    narrower.conv2, narrower.bn2 = nn.Conv2d(4, 2, 3, padding=1), nn.BatchNorm2d(2)
    narrower.fc = nn.Linear(2, 3)
    ScoreContext(narrower.double(), make_batches()).grad()
    assert len(calls) == 1
    other = make_tiny()
    other.fc = nn.Sequential(nn.Linear(5, 3)).double()
    ScoreContext(other, make_batches()).grad()
    assert len(calls) == 2  # other modules are timed afresh


def test_a_measure_without_data_never_times(monkeypatch, model, batches):
    calls = timed(monkeypatch, 1.0, 0.5)
    score(model, "magnitude", batches)
    assert calls == []


def test_models_without_2d_convolutions_stay_contiguous_untimed(monkeypatch):
    calls = timed(monkeypatch, 1.0, 0.5)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    ctx = ScoreContext(mlp, [(torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 0]))])
    ctx.grad()
    assert calls == [] and ctx.info["scoring_layout"] == "contiguous"


def test_the_real_timing_runs_both_layouts_twice_and_leaves_the_model_as_it_was(model, batches):
    calls = []
    model.register_forward_hook(lambda _, inputs, __: calls.append(
        inputs[0].is_contiguous(memory_format=CL)))
    model.train()
    found = real_timing(model, batches[0], 5.0)
    assert set(found) == {"contiguous", "channels_last"} and all(s > 0 for s in found.values())
    assert calls == [False, True, False, True]
    assert model.training and all(p.grad is None for p in model.parameters())


def test_an_unknown_layout_is_a_config_error(model, batches):
    with pytest.raises(ConfigError, match="layout 'nhwc' is not one of auto, contiguous"):
        ScoreContext(model, batches, layout="nhwc")


def test_the_model_key_is_the_modules_and_the_images_not_the_widths(model, tiny_factory):
    make_tiny, make_batches = tiny_factory
    x = make_batches()[0][0]
    key = autotune.model_key(model, x)
    assert autotune.model_key(make_tiny(seed=3), x.clone()) == key
    narrower = make_tiny()
    narrower.conv2, narrower.bn2 = nn.Conv2d(4, 2, 3, padding=1), nn.BatchNorm2d(2)
    assert autotune.model_key(narrower, x) == key
    for other in (x[:2], x.float(), x.contiguous(memory_format=CL)):
        assert autotune.model_key(model, other) != key
    renamed = make_tiny()
    renamed.add_module("extra", nn.ReLU())
    assert autotune.model_key(renamed, x) != key


def test_a_measured_value_is_remembered_for_its_model_key(model, tiny_factory):
    make_tiny, make_batches = tiny_factory
    measured, x = autotune.Measured(), make_batches()[0][0]
    assert measured.get(model, x) is None and len(measured) == 0
    assert measured.put(model, x, "found") == "found"
    assert measured.get(make_tiny(seed=3), x) == "found" and len(measured) == 1
    assert measured.get(model, x[:1]) is None


def test_the_chosen_layout_can_be_read_back(monkeypatch, model, batches):
    timed(monkeypatch, 1.0, 0.5)
    x = batches[0][0]
    assert autotune.chosen_layout(model, x) is None
    ScoreContext(model, batches).grad()
    assert autotune.chosen_layout(model, x) == "channels_last"
