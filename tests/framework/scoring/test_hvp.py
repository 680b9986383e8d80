"""How Hg is computed: kept first-order graphs within a memory cap, recomputation beyond it, the
method costs "auto" times, and what a prune event records. Hg's value itself is checked against
finite differences in test_gradients.py; here every path must give that same value."""
import pytest
import torch
import torch.nn.functional as F

from fp.errors import ConfigError
from fp.engine.prune_event import hvp_record
from fp.run import PruneEvent
from fp.nn import filter_sums
from fp.scoring import ScoreContext, autotune, hvp
from fp.scoring.gradients import ScoringLoss
from fp.scoring.hvp import choice, methods
from fp.config.settings import Prune
from fp.validation import check_fields


@pytest.fixture(autouse=True)
def fresh_costs(monkeypatch):
    monkeypatch.setattr(choice, "COSTS", autotune.Measured())


def graph_bytes(model, batch):
    model.eval()
    loss = ScoringLoss.of(model, [batch], 1.0)
    with methods.SavedBytes(loss.params) as saved:
        methods.graph_grads(loss, batch)
    return saved.bytes


def reference(model, batches):
    return ScoreContext(model, batches, hvp_method="double_backward").hess_grad()


def assert_same(got, want):
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("graphs, kept", [(0, "0/3"), (1.5, "1/3"), (2.5, "2/3"), (None, "3/3")])
def test_graphs_are_kept_up_to_the_memory_cap_and_the_rest_recomputed(model, batches, graphs,
                                                                      kept):
    memory = None if graphs is None else graphs * graph_bytes(model, batches[0]) / 2 ** 30
    ctx = ScoreContext(model, batches, hvp_method="double_backward", hvp_memory_gb=memory)
    assert_same(ctx.hess_grad(), reference(model, batches))
    assert ctx.info["hvp_kept"] == kept


def test_the_kept_graph_pass_also_gives_g_and_g_sq(model, batches):
    fused = ScoreContext(model, batches, hvp_method="double_backward")
    fused.hess_grad()
    plain = ScoreContext(model, batches)
    assert_same(fused.grad(), plain.grad())
    assert_same(fused.grad_sq(), plain.grad_sq())


def test_a_known_g_means_recomputing_each_batch(model, batches):
    ctx = ScoreContext(model, batches, hvp_method="double_backward")
    ctx.grad()
    assert_same(ctx.hess_grad(), reference(model, batches))
    assert ctx.info["hvp_kept"] == "0/3"


def test_auto_times_once_per_model_structure_and_batch_shape(model, batches, tiny_factory):
    first = ScoreContext(model, batches)
    first.hess_grad()
    assert first.info["hvp_probe"] == "this call, batch 1"
    assert set(first.info["hvp_seconds"]) == set(hvp.METHODS)
    make_tiny, make_batches = tiny_factory
    again = ScoreContext(make_tiny(seed=3), make_batches(seed=4))
    assert_same(again.hess_grad(), reference(make_tiny(seed=3), make_batches(seed=4)))
    assert again.info["hvp_probe"] == "earlier in this process"
    assert again.info["hvp_method"] == first.info["hvp_method"]
    assert len(choice.COSTS) == 1


def test_auto_takes_the_method_timed_cheaper(model, batches):
    choice.COSTS.put(model, batches[0][0],
                     choice.MethodCosts(plain_s=1.0, graph_s=1.2, double_s=3.0, jvp_s=2.0))
    ctx = ScoreContext(model, batches)
    assert_same(ctx.hess_grad(), reference(model, batches))
    assert ctx.info["hvp_method"] == "forward_over_reverse"
    assert ctx.info["hvp_seconds"] == {"double_backward": 3.2, "forward_over_reverse": 2.0}


def test_method_costs_count_what_each_method_adds_to_a_plain_gradient_pass():
    costs = choice.MethodCosts(plain_s=1.0, graph_s=1.1, double_s=1.6, jvp_s=2.2)
    assert costs.seconds(1.0) == pytest.approx({"double_backward": 1.7,
                                                "forward_over_reverse": 2.2})
    assert costs.cheapest(1.0) == "double_backward"   # graphs kept: no second forward
    assert costs.cheapest(0.0) == "forward_over_reverse"  # recomputing costs a whole pass more
    unsupported = choice.MethodCosts(plain_s=1.0, graph_s=9.0, double_s=9.0, jvp_s=None,
                                     jvp_error="x")
    assert unsupported.cheapest(0.0) == "double_backward"


def test_the_methods_are_named_in_one_tuple():
    assert hvp.METHODS == ("double_backward", "forward_over_reverse") == tuple(hvp.HVP_FUNCTIONS)
    assert ScoreContext.__init__.__kwdefaults__["hvp_method"] == "auto"


def test_saved_bytes_counts_activations_once_and_parameters_never():
    weight = torch.randn(64, 64, requires_grad=True)
    x = torch.randn(32, 64)
    with methods.SavedBytes([weight]) as saved:
        h = x @ weight          # saves x (and weight, not counted)
        (h * h).sum()           # saves h, once though used twice
    assert saved.bytes == x.untyped_storage().nbytes() + h.untyped_storage().nbytes()


def test_memory_cap_and_method_are_checked(model, batches):
    with pytest.raises(ConfigError, match="hvp_memory_gb"):
        ScoreContext(model, batches, hvp_memory_gb=-1)
    with pytest.raises(ConfigError, match="prune.hvp_method"):
        check_fields("prune", Prune(hvp_method="newton"))  # a OneOf field
    with pytest.raises(ConfigError, match="prune.hvp_memory_gb"):
        check_fields("prune", Prune(hvp_memory_gb=-0.5))  # settings check fields, then validate()


def test_a_prune_event_records_how_hg_was_computed(model, batches):
    event = PruneEvent(index=1, step=0, epoch=0, target=0.5, granularity="filter")
    event.ctx = ScoreContext(model, batches)
    assert hvp_record(event) == {}
    event.ctx.hess_grad()
    record = hvp_record(event)
    assert record["hvp_method"] in hvp.METHODS and record["hvp_kept"].endswith("/3")
    assert record["hvp_probe"] == "this call, batch 1"


def test_a_linear_model_still_has_the_cross_entropys_curvature():
    linear = torch.nn.Linear(3, 2, bias=False).double()
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 1, 0])
    # a linear model's logits are linear in θ, but the cross-entropy is not: H ≠ 0
    ctx = ScoreContext(linear, [(x, y)], hvp_method="double_backward")
    expected = torch.autograd.functional.hvp(
        lambda w: F.cross_entropy(x @ w.T / 5.0, y), linear.weight.detach(),
        ctx.grad()["weight"])[1]
    torch.testing.assert_close(ctx.hess_grad()["weight"], expected, rtol=1e-10, atol=1e-14)


def filter_sums_of_full_hg(model, batches, **kwargs):
    ctx = ScoreContext(model, batches, hvp_method="double_backward", **kwargs)
    hess_grad = ctx.hess_grad()
    return {n: filter_sums(w.detach() * hess_grad[n]) for n, w in ctx.weights.items()
            if n in hess_grad}


@pytest.mark.parametrize("memory", [None, 0.0])
def test_filter_products_equal_the_filter_sums_of_theta_times_hg(model, batches, memory):
    # conv1→bn1 is folded (with conv1's own bias), conv2→ReLU→bn2 is not, fc is a linear layer
    want = filter_sums_of_full_hg(model, batches)
    ctx = ScoreContext(model, batches, hvp_method="double_backward", hvp_memory_gb=memory)
    assert_same(ctx.filter_hess_grad(), want)
    assert ctx.info["hvp_kept"] == ("0/3" if memory == 0.0 else "3/3")


@pytest.mark.parametrize("frozen", ["bn1.weight", "bn1.bias", "conv1.bias"])
def test_filter_products_with_part_of_a_folded_pair_frozen(model, batches, frozen):
    model.get_parameter(frozen).requires_grad_(False)
    assert_same(ScoreContext(model, batches).filter_hess_grad(),
                filter_sums_of_full_hg(model, batches))


def test_filter_products_by_any_route_agree(model, batches):
    want = filter_sums_of_full_hg(model, batches)
    known_g = ScoreContext(model, batches, hvp_method="double_backward")
    known_g.grad()  # then every batch is recomputed
    assert_same(known_g.filter_hess_grad(), want)
    jvp = ScoreContext(model, batches, hvp_method="forward_over_reverse")
    assert_same(jvp.filter_hess_grad(), want)
    after_full = ScoreContext(model, batches)
    after_full.hess_grad()  # then the products are read off the whole Hg
    assert_same(after_full.filter_hess_grad(), want)
    assert_same(after_full.grad(), ScoreContext(model, batches).grad())


def test_filter_products_leave_frozen_weights_out_and_say_so(model, batches):
    model.conv2.weight.requires_grad_(False)
    dots = ScoreContext(model, batches).filter_hess_grad()
    assert "conv2.weight" not in dots and "conv1.weight" in dots
    with pytest.raises(ConfigError, match="conv2.weight"):
        dots["conv2.weight"]
