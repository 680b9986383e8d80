"""flowprune as a user who never cloned it has it: the wheel built from this checkout, installed
(not editable) into a fresh virtual environment, runs the quickstart from an empty folder. The
gin files come from inside the installed package, the built-in plugins from its entry points.

The fresh environment has no pip and no packages of its own: torch and the other dependencies
are the running environment's, reached through a ``.pth`` line. Nothing is downloaded.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SKIPPED = {".git", ".ci-venv", ".ci-runs", "build", "dist", "runs", "__pycache__", ".pytest_cache"}


def build_wheel(dest: Path) -> Path:
    """The wheel of a copy of the checkout (a build writes build/ and egg-info beside its sources)."""
    source = dest / "source"
    shutil.copytree(REPO, source, symlinks=True,
                    ignore=lambda folder, names: [n for n in names
                                                  if n in SKIPPED or n.endswith(".egg-info")])
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--no-index", "--quiet", "-w", str(dest / "dist"), str(source)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    (wheel,) = (dest / "dist").glob("flowprune-*.whl")
    return wheel


def fresh_environment(folder: Path) -> Path:
    """A new virtual environment that sees this one's packages (torch, gin, ...) but not its
    flowprune: the running site-packages is appended as a plain path, so its ``.pth`` files (the
    editable install's finder among them) are not run."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True,
                   timeout=120)
    python = folder / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    return python


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The ``bin`` folder of a fresh environment with the wheel installed."""
    python = fresh_environment(tmp_path_factory.mktemp("venv") / "venv")
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                           "--no-deps", "--no-index", "--quiet", str(wheel)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return python.parent


def in_empty_folder(bin_dir: Path, tmp_path: Path, *args: str, timeout: int = 600):
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run([str(bin_dir / args[0]), *args[1:]], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_the_wheel_ships_the_packages_and_the_experiments(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "fp/experiments/gin/quickstart.gin" in names
    assert "fp/experiments/gin/base/paper.gin" in names
    assert "fp_builtins/measures/snip.py" in names
    assert not any(name.startswith(("framework/", "plugins/", "tests/")) for name in names)


@pytest.mark.slow
def test_the_installed_wheel_imports_from_its_own_environment(installed, tmp_path):
    done = in_empty_folder(installed, tmp_path, "python", "-c",
                           "import fp, fp_builtins; print(fp.__file__); print(fp_builtins.__file__)")
    assert done.returncode == 0, done.stderr
    assert all(str(installed.parent) in line for line in done.stdout.splitlines())
    assert str(REPO) not in done.stdout


@pytest.mark.slow
def test_the_quickstart_runs_from_an_empty_folder(installed, tmp_path):
    listed = in_empty_folder(installed, tmp_path, "fp", "list", "experiments")
    assert listed.returncode == 0, listed.stderr
    assert "gin/quickstart.gin" in listed.stdout
    done = in_empty_folder(installed, tmp_path, "fp", "run", "gin/quickstart.gin", "--out", "run")
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["filters_kept"] == summary["dense_filters"] // 2 and summary["test_acc"] > 0.9
    assert (tmp_path / "run" / "model.pt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing else written here


@pytest.mark.slow
def test_a_missing_config_is_one_sentence_from_the_installed_command(installed, tmp_path):
    done = in_empty_folder(installed, tmp_path, "fp", "run", "gin/no_such_experiment.gin")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "does not exist" in done.stderr and "shipped experiments" in done.stderr
