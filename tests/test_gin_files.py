"""Every shipped gin file parses and builds its experiment (with the data swapped for a tiny
synthetic set, since CIFAR cannot be downloaded in tests)."""
from pathlib import Path

import pytest

from fp import config
from fp.build import build_setup
from fp.manager import make_manager

REPO = Path(__file__).parents[1]
FILES = sorted(p.relative_to(REPO) for p in (REPO / "gin").rglob("*.gin") if p.parent.name != "base")
TINY = ["data.dataset = 'synthetic'", "synthetic.num_train = 256", "synthetic.num_test = 32",
        "synthetic.shape = (3, 32, 32)", "flow.enabled = False"]


def test_the_paper_grid_is_complete():
    names = {p.name for p in FILES}
    for arch in ["vgg13", "mobilenet_v1", "resnet56"]:
        for measure in ["magnitude", "snip", "taylor", "biased_snip", "grasp", "grad_norm"]:
            assert f"{arch}_{measure}.gin" in names
            assert (REPO / "gin" / "cifar100" / f"{arch}_{measure}.gin").exists()
    assert (REPO / "gin" / "resnet56_snip.gin").exists() and (REPO / "gin" / "quickstart.gin").exists()


@pytest.mark.parametrize("path", FILES, ids=str)
def test_shipped_file_builds(path, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    manager = make_manager(autoload=False)
    text = (REPO / path).read_text()
    bindings = [] if "digits" in text else TINY
    settings = config.parse([str(path)], bindings, manager)
    setup = build_setup(settings, manager, tmp_path / "run")
    assert (tmp_path / "run" / "operative_config.gin").exists()
    if settings.prune.target > 0:
        assert len(setup.plan) == settings.prune.rounds
        assert setup.plan[-1].target == pytest.approx(settings.prune.target)
    declared = config.parse([str(path)], [], manager)  # as shipped, without the tiny data
    expected = "cifar100" if "cifar100" in str(path) else ("digits" if "digits" in text else "cifar10")
    assert declared.data.dataset == expected
