import copy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

import fp_builtins.tensorboard
import fp.pruning
from fp.errors import ConfigError, RegistryError
from fp_builtins import flow
from fp_builtins.flow import correlation, norms, prune_check
from fp.run import PruneEvent
from fp.nn import prunable_weights
from fp.scoring import ScoreContext
from fp.config.settings import Prune

QUICKSTART = Path(__file__).resolve().parents[2] / "gin" / "quickstart.gin"
TRAIN_T = 2.0  # the training temperature of the fake runs


def tiny_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(5, 3)).eval()


def batches(count=2, size=8):
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(size, 1, 6, 6, generator=generator),
             torch.randint(0, 3, (size,), generator=generator)) for _ in range(count)]


def fake_run(manager, model, out_dir, measure="snip"):
    records = []
    run = SimpleNamespace(
        out_dir=out_dir, model=model, manager=manager, measure=manager.registries["measures"].build(measure),
        device=torch.device("cpu"), is_main=True, resumed=False, step=0, epoch=0, masks={},
        state={}, settings=SimpleNamespace(train=SimpleNamespace(temperature=TRAIN_T),
                                           prune=Prune()),
        records=records,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1), log=records.append)
    run.log_scalars = lambda scalars, step: manager.call("log_scalars", run=run, scalars=scalars,
                                                         step=step)
    return run


def direct_grads(model, data, temperature):
    """g = mean over batches of ∇L_b, by plain autograd, eval mode."""
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    for x, y in data:
        loss = F.cross_entropy(model(x) / temperature, y)
        for acc, g in zip(total, torch.autograd.grad(loss, params)):
            acc += g / len(data)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    return dict(zip(names, total))


@torch.no_grad()
def direct_loss(model, data, temperature):
    model.eval()
    return float(np.mean([F.cross_entropy(model(x) / temperature, y).item() for x, y in data]))


# --- norms and the norm-flow check ---------------------------------------------------------------

def test_filter_norms_are_the_squared_norms_of_each_output_channel():
    weight = torch.arange(24.0).reshape(2, 3, 2, 2)
    (norm,) = norms.filter_norms_sq({"w": weight}).values()
    assert norm.tolist() == [float((weight[0] ** 2).sum()), float((weight[1] ** 2).sum())]


def test_one_step_adds_the_effective_lr_times_theta_dot_objective_gradient():
    layer = nn.Linear(3, 2, bias=False)
    grad = torch.randn(2, 3)
    layer.weight.grad = grad.clone()
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.5, weight_decay=0.01)
    window = norms.new_window({"w": layer.weight})
    norms.accumulate(window, {"w": layer.weight}, optimizer)
    theta = layer.weight.detach()
    expected = (0.1 / (1 - 0.5)) * (theta * (grad + 0.01 * theta)).sum(1)
    assert window["steps"] == 1
    assert torch.allclose(torch.tensor(norms.window_summary(window, {"w": layer.weight})["predicted"]),
                          -2 * expected)


def test_the_prediction_matches_the_measured_norm_change_under_small_steps():
    model = tiny_cnn()
    data = batches(count=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, weight_decay=1e-3)
    weights = prunable_weights(model)
    window = norms.new_window(weights)
    model.train()
    for x, y in data * 3:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        norms.accumulate(window, weights, optimizer)
    result = norms.window_summary(window, weights)
    measured, predicted = np.array(result["measured"]), np.array(result["predicted"])
    assert result["steps"] == 12 and len(measured) == 6 + 5 + 3 == sum(result["filters"].values())
    assert np.allclose(measured, predicted, rtol=0.02, atol=1e-4 * np.abs(measured).max())
    assert result["pearson"] > 0.999
    assert norms.window_summary(norms.new_window(weights), weights) is None  # no steps, nothing to say


# --- correlations ----------------------------------------------------------------------------------

def test_rank_correlations_agree_with_scipy_over_the_shared_layers():
    reference = {"a": torch.tensor([1.0, 2.0, 3.0]), "b": torch.tensor([4.0, 5.0])}
    reversed_ = {"a": torch.tensor([5.0, 4.0, 3.0]), "b": torch.tensor([2.0, 1.0])}
    generator = torch.Generator().manual_seed(0)
    noisy = {"a": torch.randn(3, generator=generator), "b": torch.randn(2, generator=generator),
             "extra": torch.randn(4, generator=generator)}
    result = correlation.rank_correlations(reference, {"reversed": reversed_, "noisy": noisy})
    assert result["reversed"] == {"spearman": pytest.approx(-1.0), "kendall": pytest.approx(-1.0)}
    flat = torch.cat([noisy["a"], noisy["b"]]).numpy()
    assert result["noisy"]["spearman"] == pytest.approx(stats.spearmanr([1, 2, 3, 4, 5], flat).statistic)
    assert result["noisy"]["kendall"] == pytest.approx(stats.kendalltau([1, 2, 3, 4, 5], flat).statistic)


def test_undefined_correlations_are_none_not_nan():
    assert correlation.pearson(torch.ones(4), torch.arange(4.0)) is None
    assert correlation.spearman(torch.tensor([1.0]), torch.tensor([2.0])) is None


# --- prune events ----------------------------------------------------------------------------------

def test_first_order_loss_prediction_is_minus_theta_dot_g_of_the_removed_entries():
    theta_g = {"w": torch.tensor([0.5, -2.0, 1.0])}
    assert prune_check.predicted_loss_change(theta_g, {"w": torch.tensor([0, 2])}) == -1.5
    masks = prune_check.newly_masked({"w": torch.tensor([True, False, True])},
                                     {"w": torch.tensor([False, False, True])})
    assert masks["w"].tolist() == [True, False, False]
    assert prune_check.predicted_loss_change(theta_g, masks) == -0.5


def test_the_prediction_is_the_real_loss_change_for_a_small_filter():
    model = tiny_cnn().double()  # float64: the change is tiny
    data = [(x.double(), y) for x, y in batches()]
    with torch.no_grad():
        model[7].weight[1] *= 1e-4  # a nearly dead output unit: second-order terms vanish
    grad = direct_grads(model, data, TRAIN_T)
    theta_g = {"7.weight": (model[7].weight * grad["7.weight"]).sum(1).detach()}
    predicted = prune_check.predicted_loss_change(theta_g, {"7.weight": torch.tensor([1])})
    before = direct_loss(model, data, TRAIN_T)
    with torch.no_grad():
        model[7].weight[1] = 0.0
    assert direct_loss(model, data, TRAIN_T) - before == pytest.approx(predicted, rel=1e-2)


def test_a_prune_event_record_matches_direct_computation(tmp_path, manager):
    data = batches()
    run = fake_run(manager, tiny_cnn(), tmp_path)
    flow.run_start(run)
    dense = copy.deepcopy(run.model)
    event = PruneEvent(index=1, step=0, epoch=0, target=0.3, granularity="filter")
    event.ctx = ScoreContext(run.model, data, temperature=run.measure.temperature)
    flow.before_prune(run, event)
    event.scores = run.measure.filter_scores(event.ctx)
    example = data[0][0][:1]
    result = fp.pruning.prune_filters(run.model, event.scores, 0.3, example_inputs=example,
                                      dense=fp.pruning.dense_stats(run.model, example))
    event.removed, event.widths_before, event.widths_after = (
        result.removed, result.widths_before, result.widths_after)
    flow.after_prune(run, event)

    record = run.records[-1]
    grad = direct_grads(dense, data, TRAIN_T)
    weights = {n: p.detach() for n, p in dense.named_parameters()}
    by_hand = -sum(float((weights[n][idx] * grad[n][idx]).sum()) for n, idx in result.removed.items())
    assert record["at"] == "prune" and record["samples"] == 16
    assert record["loss_before"] == pytest.approx(direct_loss(dense, data, TRAIN_T), rel=1e-5)
    assert record["loss_after"] == pytest.approx(direct_loss(run.model, data, TRAIN_T), rel=1e-5)
    assert record["grad_norm_sq_before"] == pytest.approx(
        sum(float((g ** 2).sum()) for g in grad.values()), rel=1e-4)
    assert record["grad_norm_sq_after"] == pytest.approx(sum(
        float((g ** 2).sum()) for g in direct_grads(run.model, data, TRAIN_T).values()), rel=1e-4)
    assert record["loss_change_predicted"] == pytest.approx(by_hand, rel=1e-4)
    assert record["pruned_frac"] == {n: 1 - result.widths_after[n] / w
                                     for n, w in result.widths_before.items()}
    magnitude = {n: w.detach().flatten(1).norm(dim=1) for n, w in prunable_weights(dense).items()}
    run_scores = torch.cat(list(event.scores.values()))
    assert record["rank_correlation"]["magnitude"]["spearman"] == pytest.approx(
        stats.spearmanr(run_scores, torch.cat(list(magnitude.values()))).statistic)
    assert record["rank_correlation"]["snip"]["kendall"] == pytest.approx(1.0)
    assert "flow" not in event.info
    assert run.state["flow"]["steps"] == 0  # a new window for the pruned shapes
    assert run.state["flow"]["start"]["0.weight"].shape == (result.widths_after["0.weight"],)
    fp_builtins.tensorboard.writer_for(run).flush()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert events.Scalars("flow/loss_change_predicted")[0].value == pytest.approx(by_hand, rel=1e-4)
    assert events.Scalars("layer/0/pruned_frac")[0].value == pytest.approx(record["pruned_frac"]["0.weight"])
    assert {"flow/grad_norm_sq_before", "flow/rank_kendall/grasp"} <= set(events.Tags()["scalars"])


def test_weight_granularity_keeps_norms_and_loss_and_skips_filter_rankings(tmp_path, manager, bind):
    data = batches()
    run = fake_run(manager, tiny_cnn(), tmp_path)
    flow.run_start(run)
    dense = copy.deepcopy(run.model)
    event = PruneEvent(index=1, step=0, epoch=0, target=0.2, granularity="weight")
    event.ctx = ScoreContext(run.model, data, temperature=5.0)
    flow.before_prune(run, event)
    weight = run.model[3].weight
    run.masks = {"3.weight": torch.rand(weight.shape, generator=torch.Generator().manual_seed(2)) > 0.3}
    with torch.no_grad():
        weight.mul_(run.masks["3.weight"])
    flow.after_prune(run, event)

    record = run.records[-1]
    grad = direct_grads(dense, data, TRAIN_T)["3.weight"]
    removed = ~run.masks["3.weight"]
    assert record["loss_change_predicted"] == pytest.approx(
        -float((dense[3].weight.detach() * grad)[removed].sum()), rel=1e-4)
    assert record["loss_after"] == pytest.approx(direct_loss(run.model, data, TRAIN_T), rel=1e-5)
    assert "rank_correlation" not in record and "pruned_frac" not in record


def test_epoch_ends_log_layer_norms_and_the_window_then_start_a_new_one(tmp_path, manager):
    run = fake_run(manager, tiny_cnn(), tmp_path)
    flow.run_start(run)
    assert run.records[0]["at"] == "start"
    x, y = batches(count=1)[0]
    F.cross_entropy(run.model(x), y).backward()
    run.optimizer.step()
    flow.after_step(run, step=1, loss=torch.tensor(0.0))
    run.step, run.epoch = 1, 1
    flow.after_epoch(run, epoch=1, metrics={})
    record = run.records[-1]
    direct = {n: float((w.detach() ** 2).sum()) for n, w in prunable_weights(run.model).items()}
    assert record["norm_sq"] == pytest.approx(direct)
    assert record["norm_sq_total"] == pytest.approx(sum(direct.values()))
    assert record["norm_flow"]["steps"] == 1 and "measured" not in record["norm_flow"]
    assert run.state["flow"]["steps"] == 0


def test_disabled_diagnostics_do_nothing(tmp_path, manager, bind):
    bind("flow.enabled = False")
    run = fake_run(manager, tiny_cnn(), tmp_path)
    flow.run_start(run)
    flow.after_step(run, step=1, loss=torch.tensor(0.0))
    flow.after_epoch(run, epoch=1, metrics={})
    assert run.records == [] and "flow" not in run.state


def test_misnamed_compared_measures_fail_at_the_start(tmp_path, manager, bind):
    bind("flow.compare = ['magnitud']")
    with pytest.raises(RegistryError, match="did you mean 'magnitude'"):
        flow.run_start(fake_run(manager, tiny_cnn(), tmp_path))
    with pytest.raises(ConfigError, match="flow.compare"):
        flow.flow(compare="snip")


@pytest.mark.slow
def test_a_magnitude_run_gets_data_for_its_diagnostics(tmp_path):
    import json

    from fp.engine import run_experiment

    out = tmp_path / "r"
    bindings = ["train.epochs=2", "prune.rounds=1", "prune.samples=128", "prune.measure='magnitude'"]
    run_experiment([str(QUICKSTART)], bindings, out=out, quiet=True, manager=fp.make_manager(autoload=False))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    flows = [r for r in records if r["event"] == "flow"]
    assert [r["at"] for r in flows] == ["start", "prune", "epoch", "epoch"]
    prune = flows[1]
    assert prune["samples"] == 128  # not the single example magnitude itself is scored on
    assert prune["rank_correlation"]["magnitude"]["spearman"] == pytest.approx(1.0)
    assert prune["rank_correlation"]["snip"]["spearman"] is not None
    assert len(prune["norm_flow"]["measured"]) == sum(prune["norm_flow"]["filters"].values())
    assert prune["norm_flow"]["pearson"] > 0.5
    assert flows[-1]["norm_flow"]["steps"] > 0
