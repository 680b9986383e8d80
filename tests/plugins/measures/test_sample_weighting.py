"""Every gradient-based measure, at both granularities and by every route to its statistics,
equals its definition computed in float64 from ``reference_stats`` when the scoring batches
differ in size (32/32/16 and 5/3): g, E[g²] and Hg are means over samples, not over batches.
A small ResNet (conv→BN pairs folded by the cheap double backward, 1x1 projection shortcuts)
and the tiny conftest model (an unfolded conv→ReLU→BN, a conv bias) are both checked."""
import pytest
import torch
from torch import nn

from fp_builtins.architectures.resnet_cifar import CifarResNet
from fp.nn import eval_mode
from fp.scoring import ScoreContext, autotune
from fp.scoring.hvp import choice
from fp.scoring.layers.fold import foldable_pairs

from .conftest import make_batches, make_tiny, reference_stats

SIZES = {"32/32/16": (32, 32, 16), "5/3": (5, 3)}
FIRST_ORDER = ["snip", "taylor", "biased_snip", "fisher", "bn_taylor"]
SECOND_ORDER = ["grasp", "grad_norm"]


def make_resnet() -> nn.Module:
    torch.manual_seed(0)
    model = CifarResNet(num_classes=3, depth=8, width=4).double()
    with torch.no_grad():  # BatchNorm far from its defaults, so folding it matters
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(-1.5, 1.5)
                bn.bias.uniform_(-0.5, 0.5)
    return model


MODELS = {"resnet": make_resnet, "tiny": make_tiny}
_REFERENCES: dict = {}


def reference(model_name: str, sizes: str, temperature: float) -> dict:
    key = model_name, sizes, temperature
    if key not in _REFERENCES:
        _REFERENCES[key] = reference_stats(MODELS[model_name](), make_batches(SIZES[sizes]),
                                           temperature)
    return _REFERENCES[key]


def expected_scores(measure, model: nn.Module, ctx: ScoreContext, stats: dict,
                    granularity: str) -> dict:
    """The measure's definition (each plugin's docstring) on the reference statistics."""
    weights = {n: w.detach() for n, w in ctx.weights.items()}
    g, g_sq, hg = stats["grad"], stats["grad_sq"], stats["hess_grad"]
    name = measure.name
    if name == "bn_taylor":
        filters = {}
        for n in weights:
            bn = ctx.following_bn_name(n)
            if bn is not None:
                gamma, beta = model.get_submodule(bn).weight, model.get_submodule(bn).bias
                filters[n] = (gamma.detach() ** 2 * g_sq[f"{bn}.weight"]
                              + beta.detach() ** 2 * g_sq[f"{bn}.bias"])
        if granularity == "filter":
            return filters
        return {n: f.reshape(-1, *[1] * (weights[n].dim() - 1)).expand_as(weights[n])
                for n, f in filters.items()}
    signed = {"snip": lambda w, n: w * g[n], "taylor": lambda w, n: w * g[n],
              "biased_snip": lambda w, n: w ** 2 * g[n], "fisher": lambda w, n: w ** 2 * g_sq[n],
              "grasp": lambda w, n: w * hg[n], "grad_norm": lambda w, n: w * hg[n]}[name]
    products = {n: signed(w, n) for n, w in weights.items()}
    if granularity == "weight":
        return {n: p if name == "grasp" else p.abs() for n, p in products.items()}
    sums = {n: (p if name in ("taylor", "grasp", "grad_norm") else p.abs()).flatten(1).sum(1)
            for n, p in products.items()}
    return {n: s.abs() if name in ("taylor", "grad_norm") else s for n, s in sums.items()}


def raw_scores(measure, ctx: ScoreContext, granularity: str) -> dict:
    """The measure's float64 scores (``fp.score`` returns them as float32)."""
    view = ctx.for_temperature(measure.temperature)
    with eval_mode(ctx.model):
        return measure.filter_scores(view) if granularity == "filter" else measure(view)


def assert_matches(actual: dict, expected: dict) -> None:
    assert set(actual) == set(expected)
    for name, value in expected.items():
        assert actual[name].dtype == torch.float64
        torch.testing.assert_close(actual[name], value, rtol=1e-9,
                                   atol=1e-12 * float(value.abs().max()))


@pytest.fixture(autouse=True)
def fresh_costs(monkeypatch):
    monkeypatch.setattr(choice, "COSTS", autotune.Measured())


def check(measure, model, model_name, ctx, sizes, granularity) -> None:
    stats = reference(model_name, sizes, measure.temperature)
    assert_matches(raw_scores(measure, ctx, granularity),
                   expected_scores(measure, model, ctx, stats, granularity))


def build(name, manager):
    return manager.registries["measures"].build(name)


@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("model_name", MODELS)
def test_first_order_measures_weigh_batches_by_their_size(model_name, sizes, manager):
    model = MODELS[model_name]()
    ctx = ScoreContext(model, make_batches(SIZES[sizes]))  # one gradient pass for them all
    for name in FIRST_ORDER:
        for granularity in ("filter", "weight"):
            check(build(name, manager), model, model_name, ctx, sizes, granularity)


@pytest.mark.parametrize("method", ["double_backward", "forward_over_reverse"])
@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("measure_name", SECOND_ORDER)
def test_hessian_measures_weigh_batches_by_their_size(measure_name, model_name, sizes, method,
                                                      manager):
    """Filter scores first (filter-wise products through kept graphs), then weight scores (the
    whole Hg, every batch recomputed as g is known by then)."""
    model = MODELS[model_name]()
    ctx = ScoreContext(model, make_batches(SIZES[sizes]), hvp_method=method)
    for granularity in ("filter", "weight"):
        check(build(measure_name, manager), model, model_name, ctx, sizes, granularity)
    assert ctx.info["hvp_method"] == method


@pytest.mark.parametrize("route", ["graphs kept", "graphs recomputed", "g known first",
                                   "one graph kept", "after the whole Hg"])
@pytest.mark.parametrize("sizes", ["32/32/16"])
def test_every_route_to_filter_products_weighs_batches_by_their_size(route, sizes, manager,
                                                                    monkeypatch):
    """Kept graphs, recomputed batches, a first pass keeping one graph and recomputing the
    rest, a cached g (every batch recomputed) and products read off the whole Hg."""
    memory = 0.0 if route == "graphs recomputed" else None
    if route == "one graph kept":
        monkeypatch.setattr(choice, "kept_share", lambda graph, budget, count: 1 / count)
    model = make_resnet()
    assert foldable_pairs(model.eval())  # the folded path is the one under test
    ctx = ScoreContext(model, make_batches(SIZES[sizes]), hvp_method="double_backward",
                       hvp_memory_gb=memory)
    if route == "g known first":
        ctx.grad(200.0)
    if route == "after the whole Hg":
        ctx.hess_grad(200.0)
    stats = reference("resnet", sizes, 200.0)
    grasp = build("grasp", manager)
    assert_matches(raw_scores(grasp, ctx, "filter"),
                   expected_scores(grasp, model, ctx, stats, "filter"))
    assert_matches(dict(ctx.grad(200.0)), stats["grad"])
    assert_matches(dict(ctx.grad_sq(200.0)), stats["grad_sq"])
    kept = {"graphs kept": "all", "graphs recomputed": "0", "one graph kept": "1",
            "g known first": "0", "after the whole Hg": "all"}[route]
    count = len(SIZES[sizes])
    assert ctx.info["hvp_kept"] == f"{count if kept == 'all' else kept}/{count}"


def test_auto_weighs_batches_by_their_size(manager):
    model = make_resnet()
    ctx = ScoreContext(model, make_batches(SIZES["5/3"]), hvp_method="auto")
    check(build("grasp", manager), model, "resnet", ctx, "5/3", "filter")


def test_a_short_last_batch_would_be_overweighted_by_a_mean_over_batches():
    """What the sample weighting changes: 32/32/16 gives the last batch 1/5 of g, not 1/3."""
    model, batches = make_resnet(), make_batches(SIZES["32/32/16"])
    per_batch = [reference_stats(model, [b], 5.0)["grad"] for b in batches]
    stats = reference_stats(model, batches, 5.0)
    name = "features.layer1.0.conv1.weight"
    by_batches = sum(g[name] for g in per_batch) / 3
    by_samples = (32 * per_batch[0][name] + 32 * per_batch[1][name] + 16 * per_batch[2][name]) / 80
    torch.testing.assert_close(stats["grad"][name], by_samples, rtol=1e-12, atol=1e-15)
    ctx = ScoreContext(model, batches)
    torch.testing.assert_close(ctx.grad()[name], by_samples, rtol=1e-10, atol=1e-14)
    assert not torch.allclose(ctx.grad()[name], by_batches, rtol=1e-2)
