"""The claims studies (gin/claims/ at CPU scale, gin/claims/paper/ at the paper's) parse, bind
what they declare, and build their experiment with the data swapped for a tiny synthetic set
(no CIFAR, no training)."""
from pathlib import Path

import gin
import pytest

from fp import config
from fp.engine.build import build_setup
from fp.manager import make_manager

REPO = Path(__file__).parents[1]
MEASURES = ("magnitude", "snip", "biased_snip", "grasp", "grad_norm", "random")
STUDIES = {"claims": REPO / "gin" / "claims", "claims/paper": REPO / "gin" / "claims" / "paper"}
FILES = [(study, folder / f"{m}.gin") for study, folder in STUDIES.items()
         for m in ("base", *MEASURES)]
TINY = ["data.dataset = 'synthetic'", "synthetic.num_train = 256", "synthetic.num_test = 32",
        "synthetic.shape = (3, 32, 32)", "data.train_per_class = None",
        "data.test_per_class = None", "flow.enabled = False"]
#: study -> what its files declare
DECLARED = {"claims": {"epochs": 8, "rounds": 3, "train_per_class": 500, "first_width": 16},
            "claims/paper": {"epochs": 160, "rounds": 25, "train_per_class": None, "first_width": 64}}


def test_every_measure_of_both_studies_has_its_file():
    for folder in STUDIES.values():
        assert sorted(p.stem for p in folder.glob("*.gin")) == sorted(("base", *MEASURES))


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
