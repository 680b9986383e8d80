import pytest
import torch
import torch.nn.functional as F
import torchvision

import fp
from fp.errors import ConfigError
from fp.pruning import count_params, filter_widths, prunable_filters, sparsity

TORCHVISION = {
    "resnet18": lambda: torchvision.models.resnet18(num_classes=10),
    "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(num_classes=10),
    "small_densenet": lambda: torchvision.models.DenseNet(growth_rate=8, block_config=(2, 2, 2),
                                                          num_init_features=16, num_classes=10),
    "efficientnet_b0": lambda: torchvision.models.efficientnet_b0(num_classes=10),
    "regnet_y_400mf": lambda: torchvision.models.regnet_y_400mf(num_classes=10),
    "convnext_tiny": lambda: torchvision.models.convnext_tiny(num_classes=10),
}


def batches(n=2, size=32):
    gen = torch.Generator().manual_seed(0)
    return [(torch.randn(2, 3, size, size, generator=gen), torch.tensor([1, 7])) for _ in range(n)]


@pytest.mark.parametrize("name", list(TORCHVISION))
def test_prune_torchvision_models_to_smaller_models_that_train(name, random_measure):
    model = TORCHVISION[name]()
    params, filters = count_params(model), prunable_filters(model)
    pruned = fp.prune(model, random_measure, batches(), 0.3)
    assert pruned is model and pruned.training  # pruned in place, its mode kept
    assert count_params(pruned) < params
    # the last slot taken may overshoot: a grouped conv's slot is one channel per group
    overshoot = (filters - prunable_filters(pruned)) - round(0.3 * filters)
    assert 0 <= overshoot < 0.01 * filters
    inputs, targets = batches(1)[0]
    F.cross_entropy(pruned(inputs), targets).backward()
    assert pruned(inputs).shape == (2, 10)


def test_prune_with_a_registered_measure_name(resnet, images):
    filters = prunable_filters(resnet)
    fp.prune(resnet, "magnitude", [(images, torch.tensor([0, 1, 2, 3]))], 0.5)
    assert abs((filters - prunable_filters(resnet)) - round(0.5 * filters)) <= 3


def test_weight_granularity_masks_the_model(resnet, random_measure, images):
    data = [(images, torch.tensor([0, 1, 2, 3]))]
    params = count_params(resnet)
    fp.prune(resnet, random_measure, data, 0.4, granularity="weight")
    assert count_params(resnet) == params  # nothing removed physically
    assert sparsity(resnet, resnet.fp_masks) == pytest.approx(0.4, abs=1e-3)
    weights = dict(resnet.named_parameters())
    assert all((weights[n][~m] == 0).all() for n, m in resnet.fp_masks.items())
    fp.prune(resnet, random_measure, data, 0.6, granularity="weight")  # cumulative
    assert sparsity(resnet, resnet.fp_masks) == pytest.approx(0.6, abs=1e-3)


def test_example_inputs_may_be_given(resnet, random_measure, images):
    fp.prune(resnet, random_measure, [(images, torch.tensor([0, 1, 2, 3]))], 0.3,
             example_inputs=torch.zeros(1, 3, 16, 16))
    assert resnet.fc.out_features == 10


@pytest.mark.parametrize("amount", [1.0, -0.2, 1.5])
def test_amount_outside_the_unit_interval_is_a_config_error(resnet, random_measure, images, amount):
    with pytest.raises(ConfigError, match="fraction"):
        fp.prune(resnet, random_measure, [(images, torch.tensor([0, 1, 2, 3]))], amount)


def test_unknown_granularity_is_a_config_error(resnet, random_measure, images):
    with pytest.raises(ConfigError, match="granularity"):
        fp.prune(resnet, random_measure, [(images, torch.tensor([0]))], 0.5, granularity="block")


def test_prune_takes_the_run_options():
    model = fp.pruning.build_model("small_cnn", num_classes=10, in_channels=3)
    dense = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    params = count_params(model)
    fp.prune(model, "magnitude", batches(), 0.3, target_type="params", max_fraction=0.5,
             protected=(next(iter(dense)),))
    widths = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    first = next(iter(dense))
    assert widths[first] == dense[first]  # protected
    assert all(widths[n] >= dense[n] / 2 for n in dense)  # max_fraction caps every layer
    assert count_params(model) <= 0.7 * params + 1e-9  # 30% of the parameters gone
    with pytest.raises(ConfigError, match="target_type"):
        fp.prune(model, "magnitude", batches(), 0.3, target_type="bytes")


def test_prune_rounds_pruned_layers_to_multiples():
    model = fp.pruning.build_model("small_cnn", num_classes=10, in_channels=3)
    dense = filter_widths(model)
    fp.prune(model, "magnitude", batches(), 0.4, round_to=16)
    changed = {n: w for n, w in filter_widths(model).items() if w != dense[n]}
    assert changed and all(w % 16 == 0 for w in changed.values())
