"""Synthetic data: shapes from the arguments, same bytes for the same seed."""
import pytest
import torch

from fp.errors import ConfigError
from fp_builtins.datasets.synthetic import Synthetic


def test_shapes_follow_the_arguments():
    data = Synthetic(num_train=40, num_test=12, shape=(2, 9, 7), num_classes=5)
    assert (len(data), data.num_classes, data.in_channels, data.image_size) == (40, 5, 2, (9, 7))
    x, y = next(iter(data.loader("test", 12, augment=True)))
    assert x.shape == (12, 2, 9, 7) and y.max() < 5


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = Synthetic(seed=1), Synthetic(seed=1), Synthetic(seed=2)
    assert torch.equal(a.splits["train"].images, b.splits["train"].images)
    assert torch.equal(a.splits["test"].labels, b.splits["test"].labels)
    assert not torch.equal(a.splits["train"].images, c.splits["train"].images)


def test_nonsense_sizes_are_config_errors():
    with pytest.raises(ConfigError, match="synthetic"):
        Synthetic(num_train=0)
