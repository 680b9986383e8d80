import os
import pickle

import gin
import pytest
import torch

from fp.errors import CheckpointError
from fp.pruning import (apply_masks, build_model, dense_stats, filter_widths, load,
                        model_from_state, model_state, prune_filters, save, weight_masks)
from fp.nn import prunable_layers


@pytest.fixture
def pruned(arch_manager, images, filter_scores):
    model = build_model("test_tiny_resnet", manager=arch_manager, width=8).eval()
    prune_filters(model, filter_scores(model), 0.5, example_inputs=images,
                  dense=dense_stats(model, images))
    return model


def test_build_model_records_the_architecture_as_data(arch_manager):
    model = build_model("test_tiny_resnet", manager=arch_manager, num_classes=7)
    assert model.fp_arch == {"name": "test_tiny_resnet", "kwargs": {"num_classes": 7}}
    assert model.fc.out_features == 7


def test_gin_bound_constructor_arguments_are_recorded(arch_manager, tmp_path):
    arch_manager.registries  # registers the architectures with gin
    gin.parse_config("architectures.test_tiny_resnet.width = 4")
    model = build_model("test_tiny_resnet", manager=arch_manager)
    assert model.fp_arch["kwargs"] == {"width": 4}
    save(model, tmp_path / "m.pt")
    gin.clear_config()
    assert load(tmp_path / "m.pt", manager=arch_manager).stem.conv.out_channels == 4


def test_round_trip_of_a_pruned_model_gives_identical_outputs(pruned, arch_manager, images,
                                                               tmp_path):
    path = save(pruned, tmp_path / "run" / "model.pt")
    loaded = load(path, manager=arch_manager)
    assert not loaded.training
    assert filter_widths(loaded) == filter_widths(pruned)
    with torch.no_grad():
        assert torch.equal(loaded(images), pruned(images))
    assert os.listdir(tmp_path / "run") == ["model.pt"]  # no temporary file left behind


def test_saved_file_is_plain_data_for_weights_only_loading(pruned, tmp_path):
    save(pruned, tmp_path / "m.pt")
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    assert state["arch"] == {"name": "test_tiny_resnet", "kwargs": {"width": 8}}
    out_channels = state["attributes"]["blocks.3.a.conv"]["out_channels"]
    assert out_channels == pruned.blocks[3].a.conv.out_channels < 32


def test_loaded_model_trains_and_can_be_pruned_again(pruned, arch_manager, images, tmp_path,
                                                     filter_scores):
    loaded = load(save(pruned, tmp_path / "m.pt"), manager=arch_manager)
    loaded.train()(images).sum().backward()
    dense = {"filters": 8 * 5 + 16 * 2 + 32 * 3 + 10}  # TinyResNet(width=8) before pruning
    prune_filters(loaded, filter_scores(loaded), 0.6, example_inputs=images, dense=dense)
    removed = dense["filters"] - sum(filter_widths(loaded).values())
    assert round(0.6 * dense["filters"]) <= removed < round(0.6 * dense["filters"]) + 3


def test_model_state_round_trip_for_checkpoints(pruned, arch_manager, images, tmp_path):
    torch.save(model_state(pruned), tmp_path / "ckpt.pt")
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    rebuilt = model_from_state(state, manager=arch_manager)
    with torch.no_grad():
        assert torch.equal(rebuilt(images), pruned(images))


def test_masks_are_saved_alongside(arch_manager, images, tmp_path):
    model = build_model("test_tiny_resnet", manager=arch_manager).eval()
    masks = weight_masks({n: l.weight.abs() for n, l in prunable_layers(model)}, 0.5)
    apply_masks(model, masks)
    loaded = load(save(model, tmp_path / "m.pt", masks=masks), manager=arch_manager)
    assert loaded.fp_masks.keys() == masks.keys()
    assert all(torch.equal(loaded.fp_masks[n], masks[n]) for n in masks)
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))


def test_a_model_not_built_by_fp_cannot_be_saved(resnet, tmp_path):
    with pytest.raises(CheckpointError, match="TinyResNet has no fp_arch"):
        save(resnet, tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_a_damaged_file_is_a_checkpoint_error_naming_it(pruned, arch_manager, tmp_path, damage):
    path = save(pruned, tmp_path / "m.pt")
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": os.urandom(2000),
                      "empty": b""}[damage])
    with pytest.raises(CheckpointError, match="m.pt"):
        load(path, manager=arch_manager)


def test_missing_file_and_foreign_dict_are_checkpoint_errors(arch_manager, tmp_path):
    with pytest.raises(CheckpointError, match="no saved model"):
        load(tmp_path / "absent.pt", manager=arch_manager)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a model saved by flowprune"):
        load(tmp_path / "other.pt", manager=arch_manager)


class Payload:
    """Unpickling it would create a file: proof that code in a checkpoint never runs."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("protocol", [pickle.DEFAULT_PROTOCOL, 2])
def test_a_file_with_pickled_code_is_refused_without_running_it(pruned, arch_manager, tmp_path,
                                                                protocol):
    marker = tmp_path / "pwned"
    state = model_state(pruned)
    state["arch"]["kwargs"]["extra"] = Payload(marker)
    torch.save(state, tmp_path / "evil.pt", pickle_protocol=protocol)
    with pytest.raises(CheckpointError, match="evil.pt") as info:
        load(tmp_path / "evil.pt", manager=arch_manager)
    assert not marker.exists()
    if protocol == 2:  # torch's own protocol: the refused global is named
        assert "pickled code" in str(info.value) and "open" in str(info.value)


@pytest.mark.parametrize("change", ["unknown", "missing"])
def test_a_state_dict_of_another_architecture_is_a_checkpoint_error(pruned, arch_manager, tmp_path,
                                                                    change):
    state = model_state(pruned)
    if change == "unknown":
        state["state_dict"]["blocks.9.conv.weight"] = torch.zeros(3, 3)
    else:
        del state["state_dict"]["blocks.0.a.conv.weight"]
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="bad.pt does not fit architecture 'test_tiny_"):
        load(tmp_path / "bad.pt", manager=arch_manager)
