"""Every shipped gin file parses and builds its experiment (with the data swapped for a tiny
synthetic set, since CIFAR cannot be downloaded in tests)."""
from pathlib import Path

import pytest

from fp import config
from fp.engine.build import build_setup
from fp.manager import make_manager

REPO = Path(__file__).parents[1]
# gin/claims/ reads an image folder with per-class subsets; tests/test_claims_gin.py builds those
FILES = sorted(p.relative_to(REPO) for p in (REPO / "gin").rglob("*.gin")
               if p.parent.name != "base" and "claims" not in p.relative_to(REPO).parts)
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
    if path.parts[:2] == ("gin", "timm"):  # timm's models: with the optional timm installed
        pytest.importorskip("timm")
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


def test_cifar10_folder_base_reads_an_image_folder_as_cifar(tmp_path, monkeypatch):
    """base/cifar10_folder.gin needs data: a folder of ten classes of 32x32 JPEGs stands in."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("test", 1)):
        for k in range(10):
            (tmp_path / split / f"class{k}").mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / f"class{k}" / f"{i}.jpg")
    monkeypatch.chdir(REPO)
    manager = make_manager(autoload=False)
    files = ["gin/resnet56_snip.gin", "gin/base/cifar10_folder.gin"]
    settings = config.parse(files, [f"imagefolder.root = '{tmp_path}'", "flow.enabled = False"],
                            manager)
    data = build_setup(settings, manager, tmp_path / "run").run.dataset
    assert settings.data.dataset == "imagefolder" and data.in_memory
    assert (len(data), data.num_classes, data.image_size) == (30, 10, (32, 32))
    assert data.mean == data.std == (0.5, 0.5, 0.5)  # the paper's code's normalisation
    assert (data.augmentation.crop_padding, data.augmentation.flip) == (4, True)
