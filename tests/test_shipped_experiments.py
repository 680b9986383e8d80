"""The experiments ship inside the package: a config path that does not exist here is looked up
among them, so `fp run gin/quickstart.gin` means the same file in any folder."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from fp import config
from fp.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_the_shipped_experiments_are_the_repository_gin_folder():
    assert (config.SHIPPED / "gin").resolve() == (REPO / "gin").resolve()


@pytest.mark.parametrize("name", ["gin/quickstart.gin", "quickstart.gin"])
def test_a_config_missing_here_is_found_among_the_shipped_ones(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config.existing_file(name) == (config.SHIPPED / "gin" / "quickstart.gin").resolve()


def test_a_file_here_wins_over_a_shipped_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gin").mkdir()
    (tmp_path / "gin" / "quickstart.gin").write_text("train.epochs = 1\n")
    assert config.existing_file("gin/quickstart.gin") == tmp_path / "gin" / "quickstart.gin"


@pytest.mark.parametrize("name", ["gin/nothing.gin", "../gin/quickstart.gin", "/no/such.gin"])
def test_a_config_found_nowhere_is_one_sentence(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="does not exist, here or among the shipped experiments"):
        config.existing_file(name)


def test_includes_resolve_from_a_config_outside_the_checkout(tmp_path, monkeypatch, manager):
    """A user's own file may include the shipped parts by their repository paths."""
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "mine.gin"
    mine.write_text("include 'gin/quickstart.gin'\ntrain.epochs = 2\n")
    settings = config.parse([str(mine)], [], manager)
    assert settings.train.epochs == 2 and settings.data.dataset == "digits"


def test_fp_list_experiments_names_every_shipped_experiment(tmp_path):
    done = subprocess.run([shutil.which("fp"), "list", "experiments"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    listed = {line.split("\t")[0] for line in done.stdout.splitlines()[1:]}
    shipped = {f"gin/{p.relative_to(REPO / 'gin').as_posix()}" for p in (REPO / "gin").rglob("*.gin")
               if "base" not in p.relative_to(REPO / "gin").parts}
    assert listed == shipped and "gin/quickstart.gin" in listed
