"""``model.init``: the paper's models start from the paper's weights (PyTorch's layer defaults,
constructed in the order of the seed paper's models.py), so filter norms start flat; the other
schemes, the defaults of the non-paper models and the errors."""
from __future__ import annotations

import json
from pathlib import Path

import gin
import pytest
import torch
from torch import nn

import fp
import fp.pruning
from fp.engine import run_experiment
from fp.errors import ConfigError

REPO = Path(__file__).parents[3]
SEEDS_AND_CLASSES = [(0, 10), (1, 100)]
TORCH_DEFAULT_NORM = 1 / 3  # E||w||^2 of a filter under kaiming-uniform with a = sqrt(5)


# --- the paper's construction order, transcribed layer by layer (only modules with parameters;
# --- ReLU, pooling and strides draw nothing from the random stream)

def paper_conv(c_in: int, c_out: int, kernel: int = 3, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel, groups=groups, bias=False)


def paper_vgg13(num_classes: int) -> list[nn.Module]:
    layers, c_in = [], 3
    for width in (64, 64, 128, 128, 256, 256, 512, 512, 512, 512):
        layers += [paper_conv(c_in, width), nn.BatchNorm2d(width)]
        c_in = width
    return layers + [nn.Linear(512, num_classes)]


def paper_mobilenet_v1(num_classes: int) -> list[nn.Module]:
    layers, c_in = [paper_conv(3, 32), nn.BatchNorm2d(32)], 32
    for width in (64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024):
        layers += [paper_conv(c_in, c_in, groups=c_in), nn.BatchNorm2d(c_in),
                   paper_conv(c_in, width, kernel=1), nn.BatchNorm2d(width)]
        c_in = width
    return layers + [nn.Linear(1024, num_classes)]


def paper_resnet56(num_classes: int) -> list[nn.Module]:
    layers, c_in = [paper_conv(3, 16), nn.BatchNorm2d(16)], 16
    for planes in (16, 32, 64):
        for _ in range(9):
            layers += [paper_conv(c_in, planes), nn.BatchNorm2d(planes),
                       paper_conv(planes, planes), nn.BatchNorm2d(planes)]
            if c_in != planes:  # the first block of stages 2 and 3: a 1x1 projection
                layers += [paper_conv(c_in, planes, kernel=1), nn.BatchNorm2d(planes)]
            c_in = planes
    return layers + [nn.Linear(64, num_classes)]


PAPER = {"vgg13": paper_vgg13, "mobilenet_v1": paper_mobilenet_v1, "resnet56": paper_resnet56}


def parameters_of(layers: list[nn.Module]) -> list[torch.Tensor]:
    return [p for layer in layers for p in layer.parameters()]


@pytest.mark.parametrize("seed, num_classes", SEEDS_AND_CLASSES)
@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_models_start_from_the_papers_weights_tensor_for_tensor(name, seed, num_classes):
    torch.manual_seed(seed)
    expected = parameters_of(PAPER[name](num_classes))
    torch.manual_seed(seed)
    model = fp.pruning.build_model(name, num_classes=num_classes, in_channels=3)
    got = list(model.parameters())
    assert [p.shape for p in got] == [p.shape for p in expected]
    assert all(torch.equal(a, b) for a, b in zip(got, expected))


def mean_filter_norms(model: nn.Module) -> list[float]:
    """Per conv: the mean over its filters of the squared filter norm."""
    return [m.weight.detach().flatten(1).square().sum(1).mean().item()
            for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_vgg13_filter_norms_start_flat_and_kaiming_fan_out_skews_them():
    flat = mean_filter_norms(fp.pruning.build_model("vgg13", num_classes=10, in_channels=3))
    assert flat == pytest.approx([TORCH_DEFAULT_NORM] * 10, rel=0.15)  # >= 64 filters a layer
    skewed = mean_filter_norms(fp.pruning.build_model("vgg13", num_classes=10, in_channels=3,
                                                      init="kaiming_fan_out"))
    # He fan-out gives 2 c_in / c_out: 3 -> 64 starts at 0.09, 64 -> 64 at 2
    assert skewed[0] == pytest.approx(2 * 3 / 64, rel=0.15)
    assert skewed[1] == pytest.approx(2.0, rel=0.15)


@pytest.mark.parametrize("name", ["vgg13", "mobilenet_v1", "cifar_resnet", "resnet20", "resnet32",
                                  "resnet56", "resnet110", "resnet18", "resnet34"])
def test_every_paper_model_defaults_to_torch_default(name):
    torch.manual_seed(0)
    default = fp.pruning.build_model(name, num_classes=10, in_channels=3)
    torch.manual_seed(0)
    explicit = fp.pruning.build_model(name, num_classes=10, in_channels=3, init="torch_default")
    assert all(torch.equal(a, b) for a, b in zip(default.parameters(), explicit.parameters()))
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0)
               for m in default.modules() if isinstance(m, nn.BatchNorm2d))


def test_small_cnn_keeps_kaiming_fan_out_by_default():
    torch.manual_seed(0)
    default = fp.pruning.build_model("small_cnn", num_classes=10, in_channels=1)
    torch.manual_seed(0)
    kaiming = fp.pruning.build_model("small_cnn", num_classes=10, in_channels=1,
                                     init="kaiming_fan_out")
    assert all(torch.equal(a, b) for a, b in zip(default.parameters(), kaiming.parameters()))
    flat = fp.pruning.build_model("small_cnn", num_classes=10, in_channels=1, init="torch_default")
    assert mean_filter_norms(flat) == pytest.approx([TORCH_DEFAULT_NORM] * 4, rel=0.15)


def test_torchvision_models_keep_their_own_init_unless_asked():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    reference = resnet18(weights=None, num_classes=10)
    torch.manual_seed(0)
    own = fp.pruning.build_model("torchvision.resnet18", num_classes=10, in_channels=3)
    assert all(torch.equal(a, b) for a, b in zip(own.parameters(), reference.parameters()))
    reset = fp.pruning.build_model("torchvision.resnet18", num_classes=10, in_channels=3,
                                   init="torch_default")
    norms = mean_filter_norms(reset)  # every conv has 64 filters or more
    assert norms == pytest.approx([TORCH_DEFAULT_NORM] * len(norms), rel=0.15)
    assert mean_filter_norms(own)[1] == pytest.approx(2.0, rel=0.15)  # He fan-out, 64 -> 64


def test_an_explicit_init_beats_a_gin_binding_on_the_architecture():
    gin.parse_config("resnet20.init = 'kaiming_fan_out'")
    torch.manual_seed(0)
    bound = fp.pruning.build_model("resnet20", num_classes=10, in_channels=3)
    torch.manual_seed(0)
    explicit = fp.pruning.build_model("resnet20", num_classes=10, in_channels=3,
                                      init="torch_default")
    assert mean_filter_norms(bound)[2] == pytest.approx(2.0, rel=0.15)  # 16 -> 16 He fan-out
    assert mean_filter_norms(explicit)[2] == pytest.approx(TORCH_DEFAULT_NORM, rel=0.15)


def test_the_init_is_recorded_and_a_saved_model_loads(tmp_path):
    model = fp.pruning.build_model("resnet20", num_classes=10, in_channels=3,
                                   init="kaiming_fan_out")
    assert model.fp_arch["kwargs"]["init"] == "kaiming_fan_out"
    fp.save(model, tmp_path / "model.pt")
    loaded = fp.load(tmp_path / "model.pt")
    assert all(torch.equal(a, b) for a, b in zip(loaded.parameters(), model.parameters()))


def test_an_unknown_init_is_a_config_error():
    with pytest.raises(ConfigError, match="'xavier' is not an initialisation scheme"):
        fp.pruning.build_model("vgg13", num_classes=10, in_channels=3, init="xavier")
    with pytest.raises(ConfigError, match="'xavier' is not an initialisation scheme"):
        fp.pruning.build_model("torchvision.resnet18", num_classes=10, in_channels=3,
                               init="xavier")


class NoInit(nn.Linear):
    """A test architecture whose constructor takes no init argument."""

    name = "test_no_init"

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__(in_channels, num_classes)


class NoInitPlugin:
    @staticmethod
    @fp.hookimpl
    def fp_register_architectures():
        return [NoInit]


def test_an_init_for_an_architecture_without_one_is_a_config_error():
    manager = fp.make_manager(autoload=False, plugins=(NoInitPlugin,))
    fp.pruning.build_model("test_no_init", manager=manager)  # unset: builds as before
    with pytest.raises(ConfigError, match="takes no 'init' argument"):
        fp.pruning.build_model("test_no_init", manager=manager, init="torch_default")


# --- through a run: the quickstart's digits and small_cnn, shortened

QUICK = ["train.epochs = 1", "prune.rounds = 1", "prune.target = 0.5", "prune.samples = 64",
         "digits.size = 8", "train.batch_size = 128", "flow.enabled = False"]


class InitialNorms:
    """A test plugin noting the model's filter norms when the run starts, before any step."""

    __name__ = "initial_norms"

    def __init__(self) -> None:
        self.norms: list[float] = []

    @fp.hookimpl
    def run_start(self, run):
        self.norms = mean_filter_norms(run.model)


def quick_run(tmp_path, *bindings):
    recorder = InitialNorms()
    outcome = run_experiment(["gin/quickstart.gin"], QUICK + list(bindings), out=tmp_path / "r",
                             quiet=True, manager=fp.make_manager(autoload=False,
                                                                 plugins=(recorder,)))
    return outcome, recorder.norms


@pytest.fixture
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


def test_model_init_binding_reaches_the_run(tmp_path, in_repo):
    outcome, norms = quick_run(tmp_path, "model.init = 'torch_default'")
    assert norms == pytest.approx([TORCH_DEFAULT_NORM] * 4, rel=0.15)
    assert "model.init = 'torch_default'" in (outcome.out_dir / "operative_config.gin").read_text()
    saved = torch.load(outcome.out_dir / "model.pt", weights_only=True)
    assert saved["arch"]["kwargs"]["init"] == "torch_default"
    assert json.loads((outcome.out_dir / "summary.json").read_text())["filters_kept"] > 0


def test_quickstart_keeps_small_cnns_kaiming_default(tmp_path, in_repo):
    _, norms = quick_run(tmp_path)
    # He fan-out, 2 c_in / c_out for widths 1 -> 32 -> 64 -> 64 -> 128 (32 filters: a loose bound)
    assert norms == pytest.approx([2 / 32, 1.0, 2.0, 1.0], rel=0.25)


@pytest.mark.parametrize("binding", ["model.init = 'xavier'", "small_cnn.init = 'xavier'"])
def test_a_bad_init_binding_is_a_config_error(tmp_path, in_repo, binding):
    with pytest.raises(ConfigError, match="xavier"):
        quick_run(tmp_path, binding)
