"""The claims studies (gin/claims/ at CPU scale, gin/claims/paper/ at the paper's) parse, bind
what they declare, and build their experiment with the data swapped for a tiny synthetic set
(no CIFAR, no training). The paper-scale study is the paper's grid: three models on CIFAR-10 and
CIFAR-100, its arms given as a second file."""
from pathlib import Path

import gin
import pytest

from fp import config
from fp.engine.build import build_setup
from fp.manager import make_manager

REPO = Path(__file__).parents[1]
MEASURES = ("magnitude", "snip", "biased_snip", "grasp", "grad_norm", "random")
STUDIES = {"claims": REPO / "gin" / "claims"}
FILES = [(study, folder / f"{m}.gin") for study, folder in STUDIES.items()
         for m in ("base", *MEASURES)]
PAPER = REPO / "gin" / "claims" / "paper"
#: the paper's grid: model -> the filter target of its experiments (gin/<model>_*.gin)
PAPER_MODELS = {"vgg13": 0.75, "resnet56": 0.6, "mobilenet_v1": 0.75}
TINY = ["data.dataset = 'synthetic'", "synthetic.num_train = 256", "synthetic.num_test = 32",
        "synthetic.shape = (3, 32, 32)", "data.train_per_class = None",
        "data.test_per_class = None", "data.eval_samples = 50", "flow.enabled = False"]
#: study -> what its files declare
DECLARED = {"claims": {"epochs": 22, "rounds": 10, "train_per_class": 100, "first_width": 16}}


#: study -> its files beside base.gin and the measures'
ARMS = {"claims": ("capacity", "dense")}


def test_every_measure_of_both_studies_has_its_file():
    for study, folder in STUDIES.items():
        assert sorted(p.stem for p in folder.glob("*.gin")) == sorted(
            ("base", *MEASURES, *ARMS[study]))


def test_the_cpu_study_declares_v_its_capacity_arm_and_its_dense_checkpoints(tmp_path,
                                                                             monkeypatch):
    monkeypatch.chdir(REPO)
    manager = make_manager(autoload=False)
    root = ["imagefolder.root = '/data/cifar10'"]
    base = config.parse([str(STUDIES["claims"] / "base.gin")], root, manager)
    assert base.data.eval_samples == 300 and base.data.test_per_class is None
    assert base.train.milestones == (20, 21)  # 10 epochs at LR 0.1 after the 10th prune
    capacity = config.parse([str(STUDIES["claims"] / "capacity.gin")], root, manager)
    assert (capacity.prune.target_type, capacity.prune.target) == ("params", pytest.approx(0.9))
    dense = config.parse([str(STUDIES["claims"] / "dense.gin")], root, manager)
    assert dense.prune.target == 0 and dense.experiment.keep_epochs == (1, 2, 5, 10, 20)
    settings = config.parse([str(STUDIES["claims"] / "dense.gin")], TINY, manager)
    setup = build_setup(settings, manager, tmp_path / "run")
    assert setup.plan == [] and len(setup.run.eval_set) > 0


@pytest.mark.parametrize("study,path", FILES, ids=lambda v: v if isinstance(v, str) else v.name)
def test_claims_file_parses_binds_and_builds(study, path, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    manager = make_manager(autoload=False)
    declared = config.parse([str(path)], ["imagefolder.root = '/data/cifar10'"], manager)
    expected = DECLARED[study]
    assert declared.prune.measure == (path.stem if path.stem != "base" else "magnitude")
    assert declared.data.dataset == "imagefolder" and declared.model.architecture == "vgg13"
    assert (declared.train.epochs, declared.prune.rounds) == (expected["epochs"], expected["rounds"])
    assert declared.data.train_per_class == expected["train_per_class"]
    assert declared.prune.target == pytest.approx(0.7) and declared.train.temperature == 5.0
    assert gin.query_parameter("imagefolder.root") == "/data/cifar10"

    settings = config.parse([str(path)], TINY, manager)
    setup = build_setup(settings, manager, tmp_path / "run")
    assert len(setup.plan) == settings.prune.rounds
    assert setup.plan[-1].target == pytest.approx(0.7)
    first_conv = next(m for m in setup.run.model.modules() if m.__class__.__name__ == "Conv2d")
    assert first_conv.out_channels == expected["first_width"]


def test_the_paper_study_is_the_papers_grid():
    files = sorted(str(p.relative_to(PAPER)) for p in PAPER.rglob("*.gin"))
    models = sorted(f"{m}.gin" for m in PAPER_MODELS)
    assert files == sorted(["capacity.gin", "dense.gin", "study.gin", *models,
                            *(f"cifar100/{m}" for m in models)])


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
@pytest.mark.parametrize("model", PAPER_MODELS)
def test_a_paper_scale_experiment_declares_the_papers_protocol_and_v(model, dataset, tmp_path,
                                                                     monkeypatch):
    monkeypatch.chdir(REPO)
    manager = make_manager(autoload=False)
    path = PAPER / (f"{model}.gin" if dataset == "cifar10" else f"cifar100/{model}.gin")
    declared = config.parse([str(path)], ["prune.measure = 'grasp'"], manager)
    assert (declared.data.dataset, declared.model.architecture) == (dataset, model)
    assert (declared.train.epochs, declared.prune.rounds, declared.prune.samples) == (160, 25, 2560)
    assert declared.data.eval_samples == 2560 and declared.train.temperature == 5.0
    assert declared.prune.target == pytest.approx(PAPER_MODELS[model])
    assert declared.prune.residual == ("masked" if model == "resnet56" else "tied")
    assert declared.prune.measure == "grasp"  # the sweep's grid names it

    dense = config.parse([str(path), str(PAPER / "dense.gin")], [], manager)
    assert dense.prune.target == 0 and dense.experiment.keep_epochs == (1, 2, 5, 10, 20, 40, 80)
    capacity = config.parse([str(path), str(PAPER / "capacity.gin")], [], manager)
    assert (capacity.prune.target_type, capacity.prune.target) == ("params", pytest.approx(0.9))

    settings = config.parse([str(path)], TINY, manager)
    setup = build_setup(settings, manager, tmp_path / "run")
    assert len(setup.plan) == 25 and setup.plan[-1].target == pytest.approx(PAPER_MODELS[model])
