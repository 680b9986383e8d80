"""torch-pruning traces every built-in model, and small_cnn survives losing half its filters."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from .conftest import count

# conv pruning groups: convs whose output channels can be removed independently (a residual
# stage couples all its block outputs, a depthwise conv follows its input)
GROUPS = {"vgg13": 10, "mobilenet_v1": 14, "resnet20": 12, "resnet18": 12, "small_cnn": 4}


@pytest.mark.parametrize("name, groups", GROUPS.items())
def test_dependency_graph_traces_and_prunes(architectures, name, groups):
    model = architectures.build(name, num_classes=10, in_channels=3).eval()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 3, 32, 32))
    assert len(list(graph.get_all_groups(root_module_types=[nn.Conv2d]))) == groups
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    width = stem.out_channels
    graph.get_pruning_group(stem, tp.prune_conv_out_channels, idxs=[0, 1]).prune()
    assert stem.out_channels == width - 2
    model.train()(torch.randn(2, 3, 32, 32)).sum().backward()


def digits(size: int):
    """scikit-learn's bundled 8x8 digits (no download), resized and standardised."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1)
    images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    images = (images - images.mean()) / images.std()
    return train_test_split(images, torch.tensor(data.target), test_size=0.2, random_state=0,
                            stratify=data.target)


def train(model, images, labels, epochs: int) -> None:
    # the paper's optimiser (SGD, momentum 0.9, weight decay 5e-4) with a digits-sized lr
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(images)).split(64):
            loss = F.cross_entropy(model(images[batch]), labels[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()


def accuracy(model, images, labels) -> float:
    with torch.no_grad():
        return (model.eval()(images).argmax(1) == labels).float().mean().item()


@pytest.fixture
def one_thread():
    """Convs this small gain nothing from intra-op threads, and lose badly on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("widths", [
    (16, 32, 32, 64),
    pytest.param((32, 64, 64, 128), marks=pytest.mark.slow),  # the default: ~20 s
])
def test_small_cnn_learns_digits_and_recovers_from_halving(architectures, widths,
                                                           one_thread):
    x_train, x_test, y_train, y_test = digits(size=16)
    model = architectures.build("small_cnn", num_classes=10, in_channels=1, widths=widths)
    train(model, x_train, y_train, epochs=10)
    assert accuracy(model, x_test, y_test) >= 0.95

    convs = count(model, nn.Conv2d)
    tp.pruner.MagnitudePruner(model.eval(), torch.randn(1, 1, 16, 16),
                              importance=tp.importance.MagnitudeImportance(p=2),
                              pruning_ratio=0.5, ignored_layers=[model.fc]).step()
    assert [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)] == \
        [w // 2 for w in widths] and count(model, nn.Conv2d) == convs
    train(model, x_train, y_train, epochs=3)
    assert accuracy(model, x_test, y_test) >= 0.90
