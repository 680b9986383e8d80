"""prune.residual = "masked": the seed paper's ResNet pruning. Channels that feed a residual add
are masked per filter (exact zeros, kept through training, saving and resume), the stem is never
pruned, every other filter is removed physically, and masked filters count as pruned."""
import pytest
import torch
import torchvision

import fp
from fp import pruning
from fp.engine import run_experiment
from fp.errors import ConfigError
from fp.tools.evaluate import evaluate, format_eval
from rich.console import Console
from fp.pruning import filter_masks, filter_widths, kept_widths

X = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
Y = torch.arange(8) % 10


def residual_layers(model):
    """Weight names of the layers whose outputs feed a residual add in fp's CIFAR ResNets."""
    return [n for n in filter_widths(model) if n.endswith("conv2.weight") or ".shortcut.0." in n]


def bn_outputs(model, names):
    """Outputs of the given modules for X, in eval mode."""
    seen = {}
    modules = dict(model.named_modules())
    hooks = [modules[n].register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o.detach()))
             for n in names]
    with torch.no_grad(), fp.nn.eval_mode(model):
        model(X)
    for h in hooks:
        h.remove()
    return seen


def test_resnet56_masks_residual_filters_and_removes_inner_ones():
    torch.manual_seed(0)
    model = pruning.build_model("resnet56", num_classes=10, in_channels=3)
    stem = model.features.stem[0].weight.detach().clone()
    before = filter_widths(model)
    dense = pruning.dense_stats(model, X[:1])
    fp.prune(model, "snip", [(X, Y)], 0.4, residual="masked")
    after, kept = filter_widths(model), kept_widths(model)
    residual = residual_layers(model)
    # the residual stream keeps its width; the stem is untouched
    assert all(after[n] == before[n] for n in residual)
    assert torch.equal(model.features.stem[0].weight, stem)
    assert kept["features.stem.0.weight"] == before["features.stem.0.weight"]
    # inner convs are removed physically, residual filters masked (both happen at 40%)
    inner = [n for n in before if n.endswith("conv1.weight")]
    assert sum(before[n] - after[n] for n in inner) > 0
    masks = filter_masks(model)
    assert any(n in masks for n in residual)
    assert all(n in residual or not n.endswith(".weight") or ".bn" in n or ".shortcut.1." in n
               for n in masks)
    # masked filters count as pruned: the filter target is met exactly
    assert pruning.prunable_filters(model) == round(0.6 * dense["filters"])
    assert pruning.prunable_filters(model) == sum(kept.values()) < sum(after.values())
    # their outputs are exact zeros after the BN, before the add
    bns = {n: n.replace("conv2.weight", "bn2").replace("shortcut.0.weight", "shortcut.1")
           for n in residual if n in masks}
    outputs = bn_outputs(model, list(bns.values()))
    for weight, bn in bns.items():
        dead = ~masks[weight]
        assert dead.any()
        assert torch.count_nonzero(outputs[bn][:, dead]) == 0
        assert torch.count_nonzero(outputs[bn][:, ~dead]) > 0


def test_masked_filters_are_scored_and_ranked_one_by_one():
    """A residual filter goes on its own score, not the mean of the filters tied to it."""
    model = pruning.build_model("resnet20", num_classes=10, in_channels=3)
    dense = pruning.dense_stats(model, X[:1])
    scores = {n: torch.ones(w) + torch.arange(w) / 100 for n, w in filter_widths(model).items()}
    scores["features.layer1.0.conv2.weight"][3] = 0.0   # lowest: masked
    scores["features.layer2.1.conv1.weight"][5] = 0.5   # second: removed physically
    result = pruning.prune_filters(model, scores, 2 / dense["filters"], example_inputs=X[:1],
                                   dense=dense, residual="masked")
    assert {n: v.tolist() for n, v in result.masked.items()} == {
        "features.layer1.0.conv2.weight": [3]}
    assert {n: v.tolist() for n, v in result.removed.items()} == {
        "features.layer2.1.conv1.weight": [5]}
    # the other members of layer1's residual group are untouched
    masks = filter_masks(model)
    assert set(masks) == {"features.layer1.0.conv2.weight", "features.layer1.0.bn2.weight",
                          "features.layer1.0.bn2.bias"}
    assert result.widths_after["features.layer1.0.conv2.weight"] == 15


@pytest.mark.parametrize("target_type", ["params", "flops"])
def test_masked_entries_count_as_pruned_params_and_flops(target_type):
    model = pruning.build_model("resnet20", num_classes=10, in_channels=3)
    dense = pruning.dense_stats(model, X[:1])
    fp.prune(model, "magnitude", [(X, Y)], 0.3, residual="masked", target_type=target_type)
    physical = sum(p.numel() for p in model.parameters())
    params = dict(model.named_parameters())
    masked = sum(int((~m).sum()) * params[n][0].numel() for n, m in filter_masks(model).items())
    assert masked > 0
    assert pruning.count_params(model) == physical - masked
    kept = (pruning.count_params(model) / dense["params"] if target_type == "params"
            else pruning.count_flops(model, X[:1]) / dense["flops"])
    assert kept == pytest.approx(0.7, abs=0.01)


def test_torchvision_resnet18_keeps_its_residual_width_and_stem():
    model = pruning.build_model("torchvision.resnet18", num_classes=10, in_channels=3)
    stem = model.conv1.weight.detach().clone()
    before = filter_widths(model)
    fp.prune(model, "snip", [(X, Y)], 0.3, residual="masked")
    after = filter_widths(model)
    residual = [n for n in before if n.endswith("conv2.weight") or "downsample.0" in n]
    assert all(after[n] == before[n] for n in residual)
    assert torch.equal(model.conv1.weight, stem)
    masks = filter_masks(model)
    assert any(n in masks for n in residual)
    assert "conv1.weight" not in masks
    assert any(after[n] < before[n] for n in before if n.endswith("conv1.weight") and "layer" in n)
    for name in residual:
        if name in masks:
            assert torch.count_nonzero(params_of(model)[name][~masks[name]]) == 0
    assert model(X).shape == (8, 10)


def params_of(model):
    return dict(model.named_parameters())


def test_a_masked_model_saves_and_loads_with_its_masks(tmp_path):
    model = pruning.build_model("resnet20", num_classes=10, in_channels=3)
    fp.prune(model, "snip", [(X, Y)], 0.4, residual="masked")
    fp.save(model, tmp_path / "m.pt")
    loaded = fp.load(tmp_path / "m.pt")
    assert filter_masks(loaded).keys() == filter_masks(model).keys()
    for name, mask in filter_masks(model).items():
        assert torch.equal(filter_masks(loaded)[name], mask)
    assert pruning.prunable_filters(loaded) == pruning.prunable_filters(model)
    with torch.no_grad():
        assert torch.allclose(loaded.eval()(X), model.eval()(X))


def test_tied_pruning_of_a_masked_model_and_bad_modes_are_refused():
    model = pruning.build_model("resnet20", num_classes=10, in_channels=3)
    fp.prune(model, "magnitude", [(X, Y)], 0.2, residual="masked")
    with pytest.raises(ConfigError, match="masked filters"):
        fp.prune(model, "magnitude", [(X, Y)], 0.4)
    with pytest.raises(ConfigError, match="residual must be one of"):
        fp.prune(model, "magnitude", [(X, Y)], 0.4, residual="zeroed")
    with pytest.raises(ConfigError, match="granularity='filter'"):
        fp.prune(model, "magnitude", [(X, Y)], 0.4, residual="masked", granularity="weight")


def test_models_without_residual_adds_prune_the_same_either_way():
    a = pruning.build_model("vgg13", num_classes=10, in_channels=3, layers=(8, "M", 16, "M", 16))
    b = pruning.build_model("vgg13", num_classes=10, in_channels=3, layers=(8, "M", 16, "M", 16))
    b.load_state_dict(a.state_dict())
    fp.prune(a, "snip", [(X, Y)], 0.5)
    fp.prune(b, "snip", [(X, Y)], 0.5, residual="masked")
    assert filter_widths(a) == filter_widths(b)
    assert not filter_masks(b)


RUN = ["train.epochs = 3", "prune.rounds = 2", "prune.target = 0.5", "prune.samples = 32",
       "prune.batch_size = 16", "train.batch_size = 32", "flow.enabled = False",
       "data.dataset = 'synthetic'", "synthetic.num_train = 64", "synthetic.num_test = 32",
       "synthetic.shape = (3, 16, 16)", "model.architecture = 'resnet20'",
       "train.weight_decay = 0.01", "prune.residual = 'masked'", "prune.measure = 'snip'",
       "train.lr_schedule = 'constant'"]


def masked_rows_are_zero(model):
    params = params_of(model)
    return all(torch.count_nonzero(params[n][~m]) == 0 for n, m in filter_masks(model).items())


def test_a_masked_run_keeps_masks_zero_through_training_and_resume(tmp_path, stopped_after_epoch):
    whole = run_experiment(["gin/quickstart.gin"], RUN, out=tmp_path / "whole", quiet=True)
    model = whole.model
    assert filter_masks(model) and masked_rows_are_zero(model)
    s = whole.summary
    assert s["filters_kept"] == round(0.5 * s["dense_filters"])
    assert s["params"] < sum(p.numel() for p in model.parameters())
    saved = fp.load(tmp_path / "whole" / "model.pt")
    assert masked_rows_are_zero(saved) and filter_masks(saved).keys() == filter_masks(model).keys()
    # fp eval states the masked share and that masks save no latency
    result = evaluate(tmp_path / "whole", warmup=1, repeats=2, max_batch=2)
    physical = sum(filter_widths(model).values())
    assert result["masked_filters"] == physical - s["filters_kept"] > 0
    assert result["masked_frac"] == pytest.approx(result["masked_filters"] / physical)
    console = Console(width=200, record=True)
    console.print(format_eval(result))
    assert "save no latency" in console.export_text()
    # stop after the first prune event, then resume: the same final weights and masks
    with pytest.raises(Exception):
        run_experiment(["gin/quickstart.gin"], RUN, out=tmp_path / "cut", quiet=True,
                       manager=stopped_after_epoch(2))
    resumed = run_experiment(["gin/quickstart.gin"], RUN, out=tmp_path / "cut", quiet=True)
    assert resumed.resumed and filter_masks(resumed.model)
    assert resumed.summary["filters_kept"] == s["filters_kept"]
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    for name, mask in filter_masks(model).items():
        assert torch.equal(filter_masks(resumed.model)[name], mask)
    assert masked_rows_are_zero(resumed.model)


def test_settings_refuse_masked_residual_with_weights_or_latency(tmp_path):
    for extra in ("prune.granularity = 'weight'", "prune.target_type = 'latency'"):
        with pytest.raises(ConfigError, match="prune.residual = 'masked'"):
            run_experiment(["gin/quickstart.gin"], RUN + [extra], out=tmp_path / "x", quiet=True)
