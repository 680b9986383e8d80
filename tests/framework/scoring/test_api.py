import copy

import gin
import pytest
import torch
import torch.nn.functional as F

import fp
from fp.errors import ConfigError, DataError, PluginError, RegistryError
from fp_builtins.measures.grasp import Grasp
from fp_builtins.measures.snip import Snip
from fp.scoring import DEFAULT_SCORING_SAMPLES, ScoreContext, score


def snip_reference(model, batches, temperature, train_mode=False):
    """Σ|θ⊙g| per filter of conv1, the gradient taken longhand in the given mode."""
    net = copy.deepcopy(model).train(train_mode)
    params = list(net.parameters())
    grads = [torch.autograd.grad(F.cross_entropy(net(x) / temperature, y), params)
             for x, y in batches]
    index = [n for n, _ in net.named_parameters()].index("conv1.weight")
    g = torch.stack([gs[index] for gs in grads]).mean(0)
    return (net.conv1.weight * g).abs().flatten(1).sum(1).detach().float()


def test_scores_use_eval_mode_leave_batchnorm_alone_and_restore_the_mode(model, batches):
    model.train()
    model.bn2.eval()
    running = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    scores = score(model, Snip(), batches)
    torch.testing.assert_close(scores["conv1.weight"], snip_reference(model, batches, 5.0))
    assert not torch.allclose(scores["conv1.weight"],
                              snip_reference(model, batches, 5.0, train_mode=True), rtol=1e-3)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in running.items())
    assert model.training and model.bn1.training and not model.bn2.training


def test_scores_are_detached_float32_with_the_promised_shapes(model, batches):
    for granularity, shape_of in (("filter", lambda w: w.shape[:1]), ("weight", lambda w: w.shape)):
        scores = score(model, Snip(), batches, granularity=granularity)
        for name, value in scores.items():
            weight = model.get_parameter(name)
            assert value.shape == shape_of(weight) and value.dtype == torch.float32
            assert not value.requires_grad and value.device == weight.device


def test_the_measure_default_temperature_applies_unless_overridden(model, batches):
    ctx = ScoreContext(model, batches)
    default = score(model, Grasp(), batches, ctx=ctx)
    at_200 = score(model, Grasp(), batches, ctx=ctx, temperature=200.0)
    at_5 = score(model, Grasp(), batches, ctx=ctx, temperature=5.0)
    assert all(torch.equal(default[n], at_200[n]) for n in default)
    assert not torch.allclose(default["fc.weight"], at_5["fc.weight"])
    torch.testing.assert_close(score(model, Snip(), batches, temperature=2.0)["conv1.weight"],
                               snip_reference(model, batches, 2.0))


def test_names_resolve_through_gin_so_bindings_apply(model, batches):
    manager = fp.make_manager()
    manager.registries  # registers the measures with gin
    gin.parse_config("snip.temperature = 2.0")
    try:
        bound = score(model, "snip", batches, manager=manager)
    finally:
        gin.clear_config()
    torch.testing.assert_close(bound["conv1.weight"], snip_reference(model, batches, 2.0))


def test_unknown_names_suggest_the_closest(model, batches):
    with pytest.raises(RegistryError, match="did you mean 'snip'"):
        score(model, "snipp", batches, manager=fp.make_manager())


def test_measure_classes_and_the_top_level_api_work_too(model, batches):
    by_class = score(model, Snip, batches)
    by_fp = fp.score(model, Snip(), batches)
    assert all(torch.equal(by_class[n], by_fp[n]) for n in by_class)


def test_misuse_is_reported_clearly(model, batches):
    with pytest.raises(ConfigError, match="granularity 'channel'"):
        score(model, Snip(), batches, granularity="channel")
    with pytest.raises(ConfigError, match="measure must be"):
        score(model, 3, batches)
    with pytest.raises(DataError, match="'snip' needs scoring batches"):
        score(model, Snip(), [])
    with pytest.raises(ConfigError, match="another model"):
        score(copy.deepcopy(model), Snip(), None, ctx=ScoreContext(model, batches))


class Misshapen(fp.Measure):
    name = "misshapen"
    needs_data = False

    def __call__(self, ctx):
        return {n: w.detach().flatten() for n, w in ctx.weights.items()}


def test_a_measure_returning_the_wrong_shape_is_named(model):
    with pytest.raises(PluginError, match="'misshapen' gave 'conv1.weight' weight scores"):
        score(model, Misshapen(), None, granularity="weight")


def test_the_paper_protocol_scores_20_batches_of_128():
    assert DEFAULT_SCORING_SAMPLES == 20 * 128
