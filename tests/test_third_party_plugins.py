"""Third-party plugins installed for real: a throwaway package with an `fp` entry point, and a
broken one. They are pip-installed into this environment and removed afterwards."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
FP = [sys.executable, "-m", "fp.cli"]

GOOD = '''
import fp

class Quartic(fp.Measure):
    """Fourth power of the weights (a throwaway test measure)."""
    name = "quartic"
    needs_data = False
    def __call__(self, ctx):
        return {n: w.detach() ** 4 for n, w in ctx.weights.items()}

@fp.hookimpl
def fp_register_measures():
    return [Quartic]
'''

BROKEN = '''
import a_module_that_is_not_installed  # the failure fp must report, not crash on
'''


def make_package(root: Path, dist: str, module: str, source: str) -> Path:
    pkg = root / dist
    (pkg / module).mkdir(parents=True)
    (pkg / module / "__init__.py").write_text(textwrap.dedent(source))
    (pkg / "pyproject.toml").write_text(textwrap.dedent(f'''
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{dist}"
        version = "0.0.7"
        [project.entry-points.fp]
        {module} = "{module}"
        [tool.setuptools]
        packages = ["{module}"]
    '''))
    return pkg


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
                   check=True, capture_output=True, text=True)


def fp_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(FP + list(args), cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugins")
    good = make_package(root, "fp-throwaway-quartic", "fp_throwaway_quartic", GOOD)
    broken = make_package(root, "fp-throwaway-broken", "fp_throwaway_broken", BROKEN)
    pip("install", "--no-deps", "--no-build-isolation", "--no-index", str(good), str(broken))
    try:
        yield
    finally:
        pip("uninstall", "-y", "fp-throwaway-quartic", "fp-throwaway-broken")


@pytest.mark.slow
def test_installed_plugin_is_listed_and_selectable(installed, tmp_path):
    env = {"FP_BLOCK_PLUGINS": "fp_throwaway_broken"}
    plugins = fp_cli("plugins", env=env)
    assert plugins.returncode == 0, plugins.stderr
    assert "fp_throwaway_quartic" in plugins.stdout and "fp-throwaway-quartic" in plugins.stdout
    assert "0.0.7" in plugins.stdout and "fp_register_measures" in plugins.stdout
    measures = fp_cli("list", "measures", env=env)
    assert "quartic" in measures.stdout and "Fourth power" in measures.stdout
    result = fp_cli("run", "gin/quickstart.gin", "--bind", "prune.measure='quartic'",
                    "--bind", "train.epochs=1", "--bind", "prune.rounds=1", "--bind", "digits.size=8",
                    "--bind", "flow.enabled=False", "--out", str(tmp_path / "run"), env=env)
    assert result.returncode == 0, result.stderr
    assert '"measure": "quartic"' in (tmp_path / "run" / "summary.json").read_text()


@pytest.mark.slow
def test_broken_plugin_is_shown_and_stops_runs_with_its_name(installed, tmp_path):
    plugins = fp_cli("plugins")
    assert plugins.returncode == 0, plugins.stderr
    flat = " ".join(plugins.stdout.split())
    assert "fp_throwaway_broken" in flat and "BROKEN" in flat and "a_module_that_is_not_installed" in flat
    run = fp_cli("run", "gin/quickstart.gin", "--out", str(tmp_path / "refused"))
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "fp_throwaway_broken" in run.stderr and "FP_BLOCK_PLUGINS" in run.stderr
    assert not (tmp_path / "refused").exists()
    off = fp_cli("list", "measures", env={"FP_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert off.returncode == 0 and "quartic" not in off.stdout
