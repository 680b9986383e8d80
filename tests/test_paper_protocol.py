"""The paper's gin files declare the paper's code's protocol: mean = std = 0.5 normalisation,
scoring on augmented images, milestones as fractions of the epochs, and masked residual pruning
for ResNet-56. Configs are parsed and resolved only; no dataset is built."""
from pathlib import Path

import gin
import pytest

from fp import config
from fp.engine.optim import lr_at
from fp.errors import ConfigError
from fp.manager import make_manager
from fp_builtins.datasets.cifar import Cifar10, Cifar100

REPO = Path(__file__).parents[1]
#: every experiment built on base/paper.gin, CIFAR-10 and CIFAR-100 alike
PAPER_FILES = sorted(str(p.relative_to(REPO)) for p in (REPO / "gin").rglob("*.gin")
                     if p.parent.name != "base" and "base/paper.gin" in p.read_text()
                     or p.parent.name == "cifar100")
#: the files the brief names, and the image-folder variants of the paper's data
NAMED = [["gin/resnet56_snip.gin"], ["gin/vgg13_snip.gin"], ["gin/mobilenet_v1_snip.gin"],
         ["gin/cifar100/resnet56_snip.gin"], ["gin/vgg13_snip.gin", "gin/base/cifar10_folder.gin"],
         ["gin/claims/paper/vgg13.gin"], ["gin/claims/paper/cifar100/resnet56.gin"]]
HALF = (0.5, 0.5, 0.5)


@pytest.fixture
def manager(monkeypatch):
    monkeypatch.chdir(REPO)
    return make_manager(autoload=False)


def test_the_paper_files_are_found():
    assert "gin/resnet56_snip.gin" in PAPER_FILES and "gin/cifar100/vgg13_grasp.gin" in PAPER_FILES
    assert len(PAPER_FILES) >= 36 and "gin/quickstart.gin" not in PAPER_FILES


@pytest.mark.parametrize("files", NAMED + [[f] for f in PAPER_FILES], ids=" + ".join)
def test_a_paper_file_resolves_to_the_paper_codes_protocol(files, manager):
    settings = config.parse(files, [], manager)
    dataset = settings.data.dataset
    assert dataset in ("cifar10", "cifar100", "imagefolder")
    assert tuple(gin.query_parameter(f"{dataset}.mean")) == HALF
    assert tuple(gin.query_parameter(f"{dataset}.std")) == HALF
    assert settings.prune.scoring_augment is True
    # the CPU claims study keeps 10 epochs at the first LR after its last prune (gin/claims/base.gin)
    cpu_claims = files[0] == "gin/claims/base.gin"
    assert settings.train.milestones == ((20, 21) if cpu_claims else (0.5, 0.75))
    resnet = settings.model.architecture == "resnet56"
    assert settings.prune.residual == ("masked" if resnet else "tied")
    assert resnet == ("resnet56" in " ".join(files))


@pytest.mark.parametrize("path", ["gin/resnet56_snip.gin", "gin/cifar100/vgg13_snip.gin"])
def test_fewer_epochs_scale_the_learning_rate_schedule(path, manager):
    settings = config.parse([path], ["train.epochs=20"], manager)
    assert settings.train.epochs == 20
    rates = [lr_at(settings.train, epoch, 20) for epoch in range(20)]
    assert rates == pytest.approx([0.1] * 10 + [0.01] * 5 + [0.001] * 5)  # 80/40/40, scaled


STD_RULE = "must be three positive numbers, one per channel (R, G, B), or None."
MEAN_RULE = "must be three numbers, one per channel (R, G, B), or None."


@pytest.mark.parametrize("binding,message", [
    ("cifar10.std = (0.5, 0.0, 0.5)", f"cifar10.std = (0.5, 0.0, 0.5) {STD_RULE}"),
    ("cifar10.std = (0.5, 0.5)", f"cifar10.std = (0.5, 0.5) {STD_RULE}"),
    ("cifar10.mean = (0.5, 0.5, 0.5, 0.5)", f"cifar10.mean = (0.5, 0.5, 0.5, 0.5) {MEAN_RULE}"),
    ("cifar100.mean = 'half'", "cifar100.mean = 'half' must be a list or tuple of numbers, or None."),
])
def test_bad_normalisation_is_one_config_error_sentence(binding, message, manager):
    with pytest.raises(ConfigError) as error:
        config.parse(["gin/resnet56_snip.gin"], [binding], manager)
    assert str(error.value) == message


def test_bad_normalisation_is_refused_before_any_data_is_read(tmp_path):
    # an empty root with download off would be a DataError: the arguments are checked first
    with pytest.raises(ConfigError) as error:
        Cifar10(root=str(tmp_path), download=False, std=(1, -1, 1))
    assert str(error.value) == f"cifar10.std = (1, -1, 1) {STD_RULE}"
    with pytest.raises(ConfigError) as error:
        Cifar100(root=str(tmp_path), download=False, mean=(0.5, float("nan"), 0.5))
    assert str(error.value) == f"cifar100.mean = (0.5, nan, 0.5) {MEAN_RULE}"

