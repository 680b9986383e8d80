"""Shared fixtures: a clean gin config, no third-party autoloading unless a test asks, and
scoring in the images' own layout (no timed choice, so no test depends on this machine's speed)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gin
import pytest
import torch

import fp


@pytest.fixture(autouse=True)
def _clean_gin_and_seed():
    gin.clear_config()
    torch.manual_seed(0)
    yield
    gin.clear_config()


@pytest.fixture(autouse=True)
def _untimed_scoring_layout(monkeypatch):
    """"auto" scoring layout decides as if channels-last were slower: contiguous, and with no
    extra passes. Tests of the choice itself patch ``time_layouts`` again."""
    from fp.scoring import autotune

    monkeypatch.setattr(autotune, "LAYOUT_CHOICES", autotune.Measured())
    monkeypatch.setattr(autotune, "time_layouts",
                        lambda *_: {"contiguous": 1.0, "channels_last": 1.0})


@pytest.fixture(autouse=True)
def _untimed_scoring_shortcuts(monkeypatch):
    """Scoring takes no exact shortcut unless a test asks (``ScoreContext(shortcuts=...)``), and
    "auto" decides as if each tied with torch's own layer, timing nothing. Tests of the choice
    itself patch the clock instead."""
    from fp.scoring import shortcut_choice
    from fp.scoring.layers import shortcuts

    monkeypatch.setattr(shortcuts, "DEFAULT_MODE", "off")
    monkeypatch.setattr(shortcut_choice, "TIMED", {})
    monkeypatch.setattr(shortcut_choice, "DECIDED", {})
    monkeypatch.setattr(shortcut_choice, "_time",
                        lambda *_: shortcut_choice.Timed(1.0, 1.0, False))


#: environment variable naming the CIFAR-10 JPEG archive ({train,test}/<class>/NNNN.jpg, gzip tar);
#: .ci/run sets it, and the tests that read real images skip where it is unset or names no file
CIFAR10_JPG = "FP_CIFAR10_JPG"


@pytest.fixture(scope="session")
def cifar10_archive() -> Path:
    """The CIFAR-10 JPEG archive that ``$FP_CIFAR10_JPG`` names; the test skips without one."""
    named = os.environ.get(CIFAR10_JPG, "")
    if not named or not Path(named).is_file():
        pytest.skip(f"real CIFAR-10 JPEGs not found: set {CIFAR10_JPG} to the archive "
                    f"cifar10-jpg.tar.gz (now {named!r})")
    return Path(named)


@pytest.fixture
def manager():
    """A fresh plugin manager with the built-ins only."""
    import fp

    return fp.make_manager(autoload=False)


@pytest.fixture
def bind():
    """Add gin bindings inside a test (the config is cleared after each test)."""
    def parse(*bindings):
        with gin.unlock_config():
            gin.parse_config(list(bindings))
    return parse


class StopAfterEpoch:
    """A plugin that fails the run once ``epoch`` epochs are done (their checkpoint written)."""

    __name__ = "stop_after_epoch"

    def __init__(self, epoch):
        self.epoch = epoch

    @fp.hookimpl
    def after_epoch(self, run, epoch, metrics):
        if epoch == self.epoch:
            raise RuntimeError("stopped by the test")


@pytest.fixture
def stopped_after_epoch():
    """``stopped_after_epoch(n)``: a plugin manager (built-ins only) whose run fails with
    "stopped by the test" once n epochs are done, their checkpoint written: a run to resume."""
    return lambda epoch: fp.make_manager(autoload=False, plugins=(StopAfterEpoch(epoch),))


@pytest.fixture
def installed_fp():
    """``installed_fp(*args)``: the installed ``fp`` console script run in a subprocess from the
    repository root (third-party plugins off, a wide terminal, no debug tracebacks)."""
    script, repo = Path(sys.executable).with_name("fp"), Path(__file__).parents[1]
    env = {**os.environ, "FP_DISABLE_PLUGIN_AUTOLOAD": "1", "COLUMNS": "250"}
    env.pop("FP_DEBUG", None)
    return lambda *args: subprocess.run([str(script), *args], cwd=repo, env=env,
                                        capture_output=True, text=True, timeout=600,
                                        stdin=subprocess.DEVNULL)
