import types

import pytest

import fp
from fp.errors import PluginError, RegistryError
from fp.manager import builtin_plugins, make_manager


def test_builtins_register_through_the_same_hooks(manager):
    assert set(builtin_plugins()) <= set(manager.infos)
    assert "fp_register_measures" in manager.infos["measures"].hooks
    assert manager.infos["measures"].distribution == "flowprune"


def test_pyproject_declares_every_builtin_as_an_entry_point():
    import tomllib
    from pathlib import Path

    meta = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert meta["project"]["entry-points"]["fp"] == builtin_plugins()


def test_each_manager_is_fresh():
    a, b = make_manager(autoload=False), make_manager(autoload=False)
    assert a is not b and a.registries is not b.registries


def test_misspelt_hook_name_is_rejected():
    plugin = types.SimpleNamespace(__name__="typo")

    @fp.hookimpl
    def after_stepp(run, step, loss):  # noqa: ARG001 - misspelt on purpose
        pass

    plugin.after_stepp = after_stepp
    with pytest.raises(Exception, match="after_stepp"):
        make_manager(autoload=False, plugins=(plugin,))


def test_duplicate_names_name_both_providers():
    class Dup(fp.Measure):
        name = "magnitude"

        def __call__(self, ctx):
            return {}

    plugin = types.SimpleNamespace(__name__="dup_plugin")
    plugin.fp_register_measures = fp.hookimpl(lambda: [Dup])
    plugin.fp_register_measures.__name__ = "fp_register_measures"
    pm = make_manager(autoload=False, plugins=(_module_with(fp_register_measures=lambda: [Dup]),))
    with pytest.raises(RegistryError, match=r"'magnitude' is registered twice.*'measures'.*'dup_plugin'"):
        pm.registries


def test_blocking_env_var_blocks_a_builtin(monkeypatch):
    monkeypatch.setenv("FP_BLOCK_PLUGINS", "tracking, flow")
    pm = make_manager(autoload=False)
    assert "tracking" not in pm.infos and pm.is_blocked("flow")


def test_broken_plugin_is_recorded_and_stops_runs_only():
    pm = make_manager(autoload=False)
    from fp.manager import _register

    def explode():
        raise ImportError("No module named 'missing_dep'")

    _register(pm, "broken_one", "broken-dist", "1.0", explode)
    assert "missing_dep" in pm.broken["broken_one"]
    with pytest.raises(PluginError, match="broken_one"):
        pm.require_healthy()


def test_unknown_name_suggests_the_closest(manager):
    with pytest.raises(RegistryError, match="did you mean 'snip'"):
        manager.registries["measures"].get("snp")


def _module_with(**hooks):
    module = types.ModuleType("dup_plugin")
    for name, fn in hooks.items():
        fn.__name__ = name
        setattr(module, name, fp.hookimpl(fn))
    return module


def test_names_outside_a_run_resolve_through_one_shared_manager(monkeypatch):
    from fp import manager as host
    from fp.pruning import build_model
    from fp.scoring import resolve_measure

    monkeypatch.setattr(host, "_SHARED", {})
    built = []
    real = host.make_manager
    monkeypatch.setattr(host, "make_manager", lambda **kw: built.append(kw) or real(**kw))
    build_model("small_cnn", num_classes=10, in_channels=3)
    assert resolve_measure("snip").name == "snip" and resolve_measure("taylor").name == "taylor"
    assert len(built) == 1  # one manager for every lookup, not one per call
    monkeypatch.setenv("FP_BLOCK_PLUGINS", "flow")  # other plugin settings: another manager
    assert host.shared_manager().is_blocked("flow") and len(built) == 2
