import pytest
import torch
import torch.nn.functional as F

from fp.errors import ConfigError, DataError
from fp_builtins.measures.fisher import Fisher
from fp_builtins.measures.snip import Snip
from fp_builtins.measures.taylor import Taylor
from fp.scoring import ScoreContext, score


def count_forwards(model):
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_default_weights_are_conv_and_linear_weights_in_module_order(model, batches):
    ctx = ScoreContext(model, batches)
    assert list(ctx.weights) == ["conv1.weight", "conv2.weight", "fc.weight"]
    assert ctx.weights["conv2.weight"] is model.conv2.weight


def test_weights_must_be_parameters_of_the_model_by_that_name(model, batches):
    with pytest.raises(ConfigError, match="conv1.weight"):
        ScoreContext(model, batches, weights={"conv1.weight": model.conv2.weight})


def test_batches_follow_the_model_dtype_and_give_the_input_shape(model, tiny_factory):
    _, make_batches = tiny_factory
    ctx = ScoreContext(model, iter(make_batches(dtype=torch.float32)))  # any iterable
    assert len(ctx.batches) == 3 and ctx.batches[0][0].dtype == torch.float64
    assert ctx.input_shape == (3, 8, 8) and ctx.device == torch.device("cpu")
    assert ScoreContext(model, None, input_shape=[3, 8, 8]).input_shape == (3, 8, 8)


def test_a_batch_that_is_not_a_pair_is_a_data_error(model):
    with pytest.raises(DataError, match="inputs, targets"):
        ScoreContext(model, [torch.zeros(1)])


def test_first_order_measures_share_one_gradient_pass(model, batches):
    ctx = ScoreContext(model, batches)
    calls = count_forwards(model)
    for measure in (Snip(), Taylor(), Fisher()):
        score(model, measure, None, ctx=ctx)
        score(model, measure, None, ctx=ctx, granularity="weight")
    assert len(calls) == len(batches)
    assert ctx.for_temperature(ctx.temperature).grad() is ctx.grad()


def test_another_temperature_is_another_pass_with_other_gradients(model, batches):
    ctx = ScoreContext(model, batches)
    calls = count_forwards(model)
    hot = ctx.for_temperature(50.0)
    assert not torch.allclose(hot.grad()["fc.weight"], ctx.grad()["fc.weight"])
    assert ctx.grad(50.0) is hot.grad()  # the view filled the shared cache
    assert len(calls) == 2 * len(batches)


def test_loss_is_cross_entropy_of_tempered_logits(model, batches):
    x, y = batches[0]
    ctx = ScoreContext(model, batches, temperature=4.0)
    logits = model(x)
    torch.testing.assert_close(ctx.loss(logits, y), F.cross_entropy(logits / 4.0, y))
    torch.testing.assert_close(ctx.loss(logits, y, 2.0), F.cross_entropy(logits / 2.0, y))


def test_bad_settings_are_config_errors(model, batches):
    with pytest.raises(ConfigError, match="temperature"):
        ScoreContext(model, batches, temperature=0.0)
    with pytest.raises(ConfigError, match="hvp_method"):
        ScoreContext(model, batches, hvp_method="newton")


def test_gradients_without_batches_are_a_data_error(model):
    with pytest.raises(DataError, match="batches"):
        ScoreContext(model, []).grad()


@pytest.mark.parametrize("kept, left_out", [("grad_sq", "grad"), ("grad", "grad_sq")])
def test_a_context_computes_a_statistic_it_left_out_only_when_asked(model, batches, kept,
                                                                    left_out):
    full = ScoreContext(model, batches)
    expected = {"grad": full.grad(), "grad_sq": full.grad_sq()}
    lean = ScoreContext(model, batches, **{left_out: False})
    calls = count_forwards(model)
    for name, value in getattr(lean, kept)().items():
        assert torch.allclose(value, expected[kept][name], rtol=1e-12, atol=0)
    assert lean._complete(("grad", lean.temperature)) is None
    first = len(calls)
    for name, value in getattr(lean, left_out)().items():  # asked anyway: one more pass
        assert torch.allclose(value, expected[left_out][name], rtol=1e-12, atol=0)
    assert len(calls) == 2 * first
    getattr(lean, left_out)()
    assert len(calls) == 2 * first  # cached now


def test_score_leaves_out_what_a_measure_never_asks_for(model, batches):
    for measure, plain, squares in ((Snip(), True, False), (Taylor(), True, False),
                                    (Fisher(), False, True)):
        ctx = ScoreContext(model, batches, grad=measure.uses_grad, grad_sq=measure.uses_grad_sq)
        assert torch.equal(score(model, measure, batches)["fc.weight"],
                           score(model, measure, None, ctx=ctx)["fc.weight"])
        grad, grad_sq = ctx._cache[("grad", ctx.temperature)]
        assert (grad is not None, grad_sq is not None) == (plain, squares)
