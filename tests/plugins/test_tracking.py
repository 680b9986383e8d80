from types import SimpleNamespace

import pytest
import torch

import fp
from fp.errors import ConfigError
from fp.manager import builtin_plugins
from fp_builtins import tracking
from fp.run import PruneEvent


class L2Measure(fp.Measure):
    name = "l2_test"

    def reduce(self, weight_scores):
        return weight_scores.flatten(1).norm(dim=1)


def make_run(measure=None, resumed=False):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 3, bias=False), torch.nn.ReLU(),
                                torch.nn.Linear(3, 2, bias=False))
    return SimpleNamespace(model=model, measure=measure or fp.Measure(), state={}, config={},
                           resumed=resumed)


def event(granularity="filter"):
    return PruneEvent(index=1, step=2, epoch=1, target=0.5, granularity=granularity)


def one_shot_scores(run, granularity="filter"):
    weights = tracking.prunable_weights(run.model)
    if granularity == "weight":
        return {n: torch.ones_like(w) for n, w in weights.items()}
    return {n: torch.ones(w.shape[0]) for n, w in weights.items()}


def step_with_grads(run, grads, step):
    for name, weight in tracking.prunable_weights(run.model).items():
        weight.grad = grads[name].clone()
    tracking.after_step(run, step=step, loss=torch.tensor(0.0))


def test_settings_are_off_by_default_and_change_nothing(bind):
    run = make_run()
    tracking.run_start(run)
    grads = {n: torch.ones_like(w) for n, w in tracking.prunable_weights(run.model).items()}
    step_with_grads(run, grads, 1)
    assert run.state["tracking"]["ema"] == {} and run.state["tracking"]["init"] == {}
    assert tracking.score(run, event(), one_shot_scores(run)) is None


@pytest.mark.parametrize("binding,message", [
    ("tracking.ema_batches = -1", r"tracking\.ema_batches = -1 must be at least 0"),
    ("tracking.init_bias = -0.5", r"tracking\.init_bias = -0\.5 must be at least 0"),
])
def test_negative_settings_are_rejected(bind, binding, message):
    bind(binding)
    with pytest.raises(ConfigError, match=message):
        tracking.run_start(make_run())


def test_ema_matches_a_hand_computation(bind):
    bind("tracking.ema_batches = 3")       # alpha = 2 / (3 + 1) = 0.5
    run = make_run()
    tracking.run_start(run)
    first = run.model[0].weight
    with torch.no_grad():
        first.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.0], [-1.0, 1.0]]))
    shapes = {n: w.shape for n, w in tracking.prunable_weights(run.model).items()}
    g1 = {n: torch.full(s, 2.0) for n, s in shapes.items()}
    g2 = {n: torch.full(s, -4.0) for n, s in shapes.items()}
    g3 = {n: torch.zeros(s) for n, s in shapes.items()}
    for step, grads in enumerate([g1, g2, g3], start=1):
        step_with_grads(run, grads, step)
    theta = first.detach().abs()
    # s1 = 2|θ|; s2 = s1 + 0.5 (4|θ| − s1) = 3|θ|; s3 = s2 + 0.5 (0 − s2) = 1.5|θ|
    assert torch.allclose(run.state["tracking"]["ema"]["0.weight"], 1.5 * theta)
    replaced = tracking.score(run, event(), one_shot_scores(run))
    assert torch.allclose(replaced["0.weight"], torch.tensor([4.5, 0.75, 3.0]))
    assert set(replaced) == {"0.weight", "2.weight"}


def test_filter_scores_reduce_as_the_measure_reduces(bind):
    bind("tracking.ema_batches = 1")        # alpha = 1: the last batch only
    run = make_run(measure=L2Measure())
    tracking.run_start(run)
    with torch.no_grad():
        run.model[0].weight.copy_(torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]]))
    grads = {n: torch.ones_like(w) for n, w in tracking.prunable_weights(run.model).items()}
    step_with_grads(run, grads, 1)
    replaced = tracking.score(run, event(), one_shot_scores(run))
    assert torch.allclose(replaced["0.weight"], torch.tensor([5.0, 1.0, 0.0]))


def test_weight_granularity_gets_the_tracked_weight_scores(bind):
    bind("tracking.ema_batches = 1")
    run = make_run()
    tracking.run_start(run)
    grads = {n: torch.full_like(w, -2.0) for n, w in tracking.prunable_weights(run.model).items()}
    step_with_grads(run, grads, 1)
    replaced = tracking.score(run, event("weight"), one_shot_scores(run, "weight"))
    assert torch.allclose(replaced["2.weight"], 2.0 * run.model[2].weight.detach().abs())


def test_one_shot_scores_stand_until_every_weight_is_tracked(bind):
    bind("tracking.ema_batches = 4")
    run = make_run()
    tracking.run_start(run)
    assert tracking.score(run, event(), one_shot_scores(run)) is None   # pruning at init
    grads = {n: torch.ones_like(w) for n, w in tracking.prunable_weights(run.model).items()}
    step_with_grads(run, grads, 1)
    # surgery: the first layer loses a filter, the second an input channel
    run.model[0] = torch.nn.Linear(2, 2, bias=False)
    run.model[2] = torch.nn.Linear(2, 2, bias=False)
    pruned = event()
    assert tracking.score(run, pruned, one_shot_scores(run)) is None
    assert pruned.info["tracking"] == {"tracked_scores": False, "biased": []}
    grads = {n: torch.ones_like(w) for n, w in tracking.prunable_weights(run.model).items()}
    step_with_grads(run, grads, 2)
    # the averages restart at the new shapes instead of blending with stale ones
    assert torch.allclose(run.state["tracking"]["ema"]["0.weight"], run.model[0].weight.abs())
    assert tracking.score(run, event(), one_shot_scores(run))["0.weight"].shape == (2,)


def test_bias_follows_the_documented_formula(bind):
    bind("tracking.init_bias = 2.0")
    run = make_run()
    with torch.no_grad():
        run.model[0].weight.copy_(torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]]))
    tracking.run_start(run)
    with torch.no_grad():     # training moves filter 0 by a norm of 1 and filter 1 by 0.5
        run.model[0].weight.add_(torch.tensor([[0.6, 0.8], [0.0, 0.5], [0.0, 0.0]]))
    scores = {"0.weight": torch.tensor([1.0, 2.0, 3.0]), "2.weight": torch.tensor([1.0, 1.0])}
    biased = tracking.score(run, event(), scores)
    # 1 + 2 · (1 / 5), 1 + 2 · (0.5 / 1), 1 + 0
    assert torch.allclose(biased["0.weight"], torch.tensor([1.4, 4.0, 3.0]))
    assert torch.allclose(biased["2.weight"], scores["2.weight"])   # unchanged since init


def test_bias_broadcasts_the_filter_factor_at_weight_granularity(bind):
    bind("tracking.init_bias = 1.0")
    run = make_run()
    tracking.run_start(run)
    with torch.no_grad():
        run.model[0].weight.mul_(torch.tensor([[2.0], [1.0], [1.0]]))   # filter 0 moved by 100 %
    scores = one_shot_scores(run, "weight")
    biased = tracking.score(run, event("weight"), scores)
    assert torch.allclose(biased["0.weight"], torch.tensor([[2.0, 2.0], [1.0, 1.0], [1.0, 1.0]]))


def test_bias_skips_weights_reshaped_by_surgery(bind):
    bind("tracking.init_bias = 1.0")
    run = make_run()
    tracking.run_start(run)
    run.model[0] = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        run.model[2].weight.mul_(3.0)
    scores = {"0.weight": torch.ones(2), "2.weight": torch.ones(2)}
    pruned = event()
    biased = tracking.score(run, pruned, scores)
    assert torch.equal(biased["0.weight"], torch.ones(2))
    assert torch.allclose(biased["2.weight"], torch.full((2,), 3.0))
    assert pruned.info["tracking"]["biased"] == ["2.weight"]


def test_a_resumed_run_keeps_its_saved_initial_weights(bind):
    bind("tracking.init_bias = 1.0")
    run = make_run()
    tracking.run_start(run)
    saved = {n: t.clone() for n, t in run.state["tracking"]["init"].items()}
    with torch.no_grad():
        run.model[0].weight.add_(1.0)
    resumed = SimpleNamespace(model=run.model, measure=run.measure, state=run.state, config={},
                              resumed=True)
    tracking.run_start(resumed)
    assert all(torch.equal(saved[n], t) for n, t in resumed.state["tracking"]["init"].items())


def test_the_plugin_registers_its_hooks(monkeypatch):
    monkeypatch.setenv("FP_BLOCK_PLUGINS", ",".join(n for n in builtin_plugins() if n != "tracking"))
    manager = fp.make_manager(autoload=False)
    assert manager.infos["tracking"].error is None
    assert {"run_start", "after_step", "score"} <= set(manager.infos["tracking"].hooks)
