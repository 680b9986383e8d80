"""The built-in datasets register through the plugin hook and build through gin."""
import gin

import fp


def test_every_builtin_dataset_is_registered_with_a_description():
    registry = fp.make_manager(autoload=False).registries["datasets"]
    assert {"cifar10", "cifar100", "digits", "imagefolder", "synthetic"} <= set(registry.names())
    for name in ("cifar10", "cifar100", "digits", "imagefolder", "synthetic"):
        assert registry.describe(name)


def test_gin_bindings_reach_the_constructor():
    registry = fp.make_manager(autoload=False).registries["datasets"]
    with gin.unlock_config():
        gin.parse_config("datasets.synthetic.num_train = 17")
    try:
        assert len(registry.build("synthetic")) == 17
    finally:
        gin.clear_config()
