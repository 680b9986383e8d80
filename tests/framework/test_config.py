"""gin experiments: files, includes, bindings, and the errors users get for bad ones."""
from pathlib import Path

import pytest

from fp import config
from fp.errors import ConfigError, RegistryError

REPO = Path(__file__).parents[2]


def parse(manager, files=(), bindings=()):
    return config.parse([str(f) for f in files], list(bindings), manager)


def test_bindings_override_files_and_reach_settings(manager, tmp_path):
    cfg = tmp_path / "exp.gin"
    cfg.write_text('prune.measure = "snip"\ntrain.epochs = 7\n')
    st = parse(manager, [cfg], ["train.epochs = 3", "prune.measure = 'taylor'"])
    assert st.train.epochs == 3 and st.prune.measure == "taylor"


def test_include_resolves_relative_to_the_including_file(manager, tmp_path, monkeypatch):
    (tmp_path / "a" / "base").mkdir(parents=True)
    (tmp_path / "a" / "base" / "common.gin").write_text("train.epochs = 11\n")
    (tmp_path / "a" / "exp.gin").write_text("include 'base/common.gin'\nprune.target = 0.5\n")
    monkeypatch.chdir(tmp_path)  # the include must not depend on the working directory
    st = parse(manager, [tmp_path / "a" / "exp.gin"])
    assert st.train.epochs == 11 and st.prune.target == 0.5


def test_shipped_cifar100_file_includes_its_cifar10_twin(manager):
    st = parse(manager, [REPO / "gin" / "cifar100" / "resnet56_snip.gin"])
    assert (st.data.dataset, st.model.architecture, st.prune.measure) == ("cifar100", "resnet56", "snip")
    assert st.prune.rounds == 25 and st.train.epochs == 160


def test_registered_classes_are_gin_configurables(manager):
    import gin

    parse(manager, bindings=["snip.temperature = 2.0"])
    measure = manager.registries["measures"].build("snip")
    assert measure.temperature == 2.0 or gin.query_parameter("snip.temperature") == 2.0


@pytest.mark.parametrize("binding, culprit", [
    ("train.epoch = 3", "did you mean 'epochs'"),
    ("trian.epochs = 3", "did you mean 'train'"),
    ("prune.target = 1.5", "prune.target = 1.5 must be in [0, 1)"),
    ("train.epochs = -1", "train.epochs = -1 must be at least 1"),
    ("prune.rounds = 0", "prune.rounds = 0 must be at least 1"),
    ("prune.scoring_layout = 'nhwc'",
     "prune.scoring_layout = 'nhwc' must be one of 'auto', 'contiguous', 'channels_last'"),
])
def test_bad_bindings_are_one_clear_sentence(manager, binding, culprit):
    with pytest.raises(ConfigError) as err:
        parse(manager, bindings=[binding])
    assert culprit in str(err.value) and "\n" not in str(err.value)


def test_misspelt_registry_name_suggests(manager):
    with pytest.raises(RegistryError, match="did you mean 'snip'"):
        parse(manager, bindings=["prune.measure = 'snipp'"])


def test_syntax_error_names_file_and_line(manager, tmp_path):
    cfg = tmp_path / "broken.gin"
    cfg.write_text("train.epochs = 3\nprune.protected = ('fc',\ntrain.lr = 0.1\n")
    with pytest.raises(ConfigError, match=r"broken.gin, line 2"):
        parse(manager, [cfg])


def test_missing_file_and_directory_are_refused(manager, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        parse(manager, [tmp_path / "nope.gin"])
    with pytest.raises(ConfigError, match="is a directory"):
        parse(manager, [tmp_path])


def test_missing_include_is_named(manager, tmp_path):
    cfg = tmp_path / "exp.gin"
    cfg.write_text("include 'nowhere/base.gin'\n")
    with pytest.raises(ConfigError, match="nowhere/base.gin"):
        parse(manager, [cfg])


@pytest.mark.parametrize("statement", ["import os", "from os import path", "include 'other.gin'"])
def test_a_recorded_run_config_with_statements_is_refused_unread(manager, tmp_path, statement):
    recorded = tmp_path / "config.gin"
    recorded.write_text(f"data.dataset = 'digits'\n{statement}\n")
    with pytest.raises(ConfigError, match=r"config.gin, line 2: .*refused unread"):
        config.parse_recorded(recorded, manager)
    recorded.write_text("data.dataset = 'digits'\ndigits.size = 8\n")
    assert config.parse_recorded(recorded, manager).data.dataset == "digits"


def test_a_bare_word_on_bind_reads_as_a_string(manager):
    resolved = config.parse(["gin/quickstart.gin"], ["prune.measure=grasp", "model.architecture = small_cnn",
                                                   "imagefolder.root=/data/cifar-10"], manager)
    assert resolved.prune.measure == "grasp" and resolved.model.architecture == "small_cnn"
    assert "imagefolder.root = '/data/cifar-10'" in config.config_text()
    with pytest.raises(ConfigError, match=r"--bind 'train.milestones=\(1, ': .* not a valid literal"):
        config.parse(["gin/quickstart.gin"], ["train.milestones=(1, "], manager)


def test_an_include_cycle_and_a_file_that_is_not_text_are_one_sentence(manager, tmp_path):
    (tmp_path / "a.gin").write_text("include 'b.gin'\n")
    (tmp_path / "b.gin").write_text("include 'a.gin'\n")
    with pytest.raises(ConfigError, match=r"a.gin includes itself \(a.gin -> b.gin -> a.gin\)"):
        config.parse([tmp_path / "a.gin"], [], manager)
    (tmp_path / "binary.gin").write_bytes(b"train.epochs = 3\n\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match=r"binary.gin is not UTF-8 text"):
        config.parse([tmp_path / "binary.gin"], [], manager)
