"""fp reaches gin's private state through fp.gin_adapter only, on gin versions it was checked on.

A gin release may rename or reshape any private name; these tests then fail here, in one place:
the scan below keeps every private access inside the adapter, the version pin says which gin
releases the adapter was checked on, and the remaining tests exercise each adapter function.
"""
from __future__ import annotations

import ast
import contextlib
import importlib.metadata
import os
from pathlib import Path

import gin
import pytest

from fp import gin_adapter

ROOT = Path(__file__).resolve().parents[1]
SOURCES = (ROOT / "framework" / "fp", ROOT / "plugins" / "fp_builtins")
ADAPTER = ROOT / "framework" / "fp" / "gin_adapter.py"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def gin_private_accesses(source: str) -> list[str]:
    """Each access to a private name of gin or of one of its modules in ``source``, as
    ``line: text``: ``gin_config._X``, ``gin.config._X``, ``getattr(gin_config, "_X")``,
    ``from gin.config import _X``, ``import gin._x``."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {}  # local name -> the gin module it stands for
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "gin":
                    if any(_private(part) for part in alias.name.split(".")):
                        found.append(f"{node.lineno}: import {alias.name}")
                    if alias.asname:
                        aliases[alias.asname] = alias.name
                    else:
                        aliases[alias.name.split(".")[0]] = "gin"
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if node.module.split(".")[0] == "gin":
                for alias in node.names:
                    if _private(alias.name) or any(_private(p) for p in node.module.split(".")):
                        found.append(f"{node.lineno}: from {node.module} import {alias.name}")
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    def gin_path(node: ast.AST) -> str | None:
        """The gin module (or gin attribute) an expression names, if it names one."""
        if isinstance(node, ast.Name):
            return aliases.get(node.id)
        if isinstance(node, ast.Attribute):
            base = gin_path(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr) and gin_path(node.value):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
              and len(node.args) >= 2
              and gin_path(node.args[0]) and isinstance(node.args[1], ast.Constant)
              and isinstance(node.args[1].value, str) and _private(node.args[1].value)):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return sorted(set(found), key=lambda line: int(line.split(":")[0]))


def test_the_scan_finds_every_form_of_private_access():
    source = """
import gin
import gin.config
import gin.config as gc
from gin import config as gin_config
from gin.config import _CONFIG
from gin import selector_map

def f():
    from gin import config
    return config._FILE_READERS

gin.config._REGISTRY
gc._LOCATION_PREFIXES.append('x')
gin_config._REGISTRY.matching_selectors
getattr(gin_config, '_CONFIG')
selector_map._TERMINAL_KEY
gin.__version__, gin.config.parse_config, gin_config.REQUIRED, other._REGISTRY
"""
    found = [line.split(": ", 1)[1] for line in gin_private_accesses(source)]
    assert found == ["from gin.config import _CONFIG", "config._FILE_READERS",
                     "gin.config._REGISTRY", "gc._LOCATION_PREFIXES", "gin_config._REGISTRY",
                     "getattr(gin_config, '_CONFIG')", "selector_map._TERMINAL_KEY"]


def test_only_the_adapter_touches_gin_private_names():
    offenders = {}
    for folder in SOURCES:
        for path in sorted(folder.rglob("*.py")):
            if path == ADAPTER:
                continue
            found = gin_private_accesses(path.read_text(encoding="utf-8"))
            if found:
                offenders[str(path.relative_to(ROOT))] = found
    assert offenders == {}, ("gin's private names are used outside framework/fp/gin_adapter.py; "
                             "add a named function there and call it instead")
    assert gin_private_accesses(ADAPTER.read_text(encoding="utf-8"))  # the scan sees the adapter's


def test_the_installed_gin_is_one_the_adapter_was_checked_on():
    installed = importlib.metadata.version("gin-config")
    assert installed in gin_adapter.CHECKED_GIN_VERSIONS, (
        f"gin-config {installed} is installed, but fp.gin_adapter was checked on "
        f"{', '.join(gin_adapter.CHECKED_GIN_VERSIONS)} only. Run `python -m pytest "
        f"tests/test_gin_adapter.py tests/framework/test_config.py tests/test_gin_files.py` "
        f"with it installed; if they pass, add {installed!r} to CHECKED_GIN_VERSIONS in "
        f"framework/fp/gin_adapter.py, else fix the adapter first.")


# ---- each adapter function, on configurables of this test's own gin module ----------------------

MODULE = "fpadaptertest"


def picked(value: int = 1) -> int:
    return value


def other_picked(value: int = 2) -> int:
    return value


class Widget:
    def __init__(self, size: int = 1, colour: str = "red"):
        self.size, self.colour = size, colour


@pytest.fixture
def test_configurables():
    """``fpadaptertest.pick``, ``fpadaptertest.other.pick`` (so ``pick`` alone is ambiguous) and
    ``fpadaptertest.widget``; dropped again afterwards."""
    selectors = [f"{MODULE}.pick", f"{MODULE}.other.pick", f"{MODULE}.widget"]
    gin.external_configurable(picked, name="pick", module=MODULE)
    gin.external_configurable(other_picked, name="pick", module=f"{MODULE}.other")
    gin.external_configurable(Widget, name="widget", module=MODULE)
    yield selectors
    gin.clear_config()
    for selector in selectors:
        gin_adapter.drop_configurable(selector)


def test_configurable_names_and_drop_configurable(test_configurables):
    names = gin_adapter.configurable_names()
    assert set(test_configurables) <= set(names) and names == sorted(names)
    gin_adapter.drop_configurable(f"{MODULE}.widget")
    assert f"{MODULE}.widget" not in gin_adapter.configurable_names()
    gin_adapter.drop_configurable(f"{MODULE}.widget")  # dropping what is not there: nothing
    with pytest.raises(Exception, match="No configurable matching"):
        gin.parse_config(f"{MODULE}.widget.size = 3")
    gin.external_configurable(Widget, name="widget", module=MODULE)  # the name is free again
    gin.parse_config(f"{MODULE}.widget.size = 3")


def test_parameters_of(test_configurables):
    assert gin_adapter.parameters_of("widget") == ["size", "colour"]  # a class: no self
    assert gin_adapter.parameters_of(f"{MODULE}.pick") == ["value"]
    assert gin_adapter.parameters_of("no_such_configurable_anywhere") == []
    assert gin_adapter.parameters_of(f"{MODULE}.other") == []  # a module, not a configurable


def test_bound_values(test_configurables):
    gin.parse_config(f"{MODULE}.widget.size = 3\nouter/{MODULE}.widget.colour = 'blue'\n"
                     f"{MODULE}.other.pick.value = 5")
    bound = {(b.scope, b.name): (b.target, b.values) for b in gin_adapter.bound_values()}
    assert bound == {("", "widget"): (Widget, {"size": 3}),
                     ("outer", "widget"): (Widget, {"colour": "blue"}),
                     ("", "pick"): (other_picked, {"value": 5})}


def test_exact_names_bind(test_configurables, monkeypatch):
    monkeypatch.setattr(gin_adapter, "_EXACT_MODULES", set(gin_adapter._EXACT_MODULES))
    with pytest.raises(Exception, match="Ambiguous selector 'pick'"):
        gin.parse_config("pick.value = 7")
    assert gin_adapter.parameters_of("pick") == []  # ambiguous: no parameters to suggest
    gin_adapter.exact_names_bind([MODULE])
    gin_adapter.exact_names_bind([MODULE])  # twice: the same
    gin.parse_config("pick.value = 7")
    assert gin.query_parameter(f"{MODULE}.pick.value") == 7
    assert gin_adapter.parameters_of("pick") == ["value"]
    assert gin.get_configurable("pick")() == 7
    gin.parse_config("other.pick.value = 8")  # the deeper one is still reached by a longer name
    assert gin.query_parameter(f"{MODULE}.other.pick.value") == 8


def test_resolve_unmatched(test_configurables, monkeypatch):
    monkeypatch.setattr(gin_adapter, "_RESOLVER", list(gin_adapter._RESOLVER))
    asked = []

    def resolver(partial: str) -> bool:
        asked.append(partial)
        if partial != "lazy.gadget":
            return False
        gin.external_configurable(Widget, name="lazy.gadget", module=MODULE)
        test_configurables.append(f"{MODULE}.lazy.gadget")  # dropped by the fixture
        return True

    gin_adapter.resolve_unmatched(resolver)
    gin.parse_config("widget.size = 2")  # a match: the resolver is not asked
    gin.parse_config("lazy.gadget.size = 3")
    assert gin.get_configurable("lazy.gadget")().size == 3 and asked == ["lazy.gadget"]
    with pytest.raises(Exception, match="No configurable matching 'lazy.other'"):
        gin.parse_config("lazy.other.size = 3")
    gin_adapter.resolve_unmatched(None)
    with pytest.raises(Exception, match="No configurable matching 'lazy.more'"):
        gin.parse_config("lazy.more.size = 3")
    assert set(asked) == {"lazy.gadget", "lazy.other"}  # not asked once removed


def test_search_path_and_searched_first(tmp_path, monkeypatch, test_configurables):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shipped").mkdir()
    (tmp_path / "near").mkdir()
    (tmp_path / "shipped" / "exp.gin").write_text("include 'part.gin'\n")
    (tmp_path / "shipped" / "part.gin").write_text(f"{MODULE}.widget.size = 1\n")
    (tmp_path / "near" / "part.gin").write_text(f"{MODULE}.widget.size = 2\n")
    opened = []

    @contextlib.contextmanager
    def reader(path):
        opened.append(os.path.relpath(path, tmp_path))
        with open(path, encoding="utf-8") as handle:
            yield handle

    with gin_adapter.search_path([str(tmp_path / "shipped")], reader):
        gin.parse_config_file("exp.gin")
        assert gin.query_parameter(f"{MODULE}.widget.size") == 1
        with gin_adapter.searched_first(tmp_path / "near"):
            gin.parse_config_file("exp.gin")
            assert gin.query_parameter(f"{MODULE}.widget.size") == 2
        gin.parse_config_file("exp.gin")
        assert gin.query_parameter(f"{MODULE}.widget.size") == 1
    assert opened == [os.path.join("shipped", "exp.gin"), os.path.join("shipped", "part.gin"),
                      os.path.join("shipped", "exp.gin"), os.path.join("near", "part.gin"),
                      os.path.join("shipped", "exp.gin"), os.path.join("shipped", "part.gin")]
    with pytest.raises(IOError, match="Unable to open file: exp.gin"):
        gin.parse_config_file("exp.gin")  # gin's own search list is back: the current folder
    opened.clear()
    (tmp_path / "exp.gin").write_text(f"{MODULE}.widget.size = 4\n")
    gin.parse_config_file("exp.gin")  # and gin's own reader
    assert opened == [] and gin.query_parameter(f"{MODULE}.widget.size") == 4


def test_search_path_restores_gin_after_an_error(tmp_path, test_configurables):
    def reader(path):
        raise RuntimeError("unreadable")

    (tmp_path / "exp.gin").write_text(f"{MODULE}.widget.size = 4\n")
    with pytest.raises(RuntimeError):
        with gin_adapter.search_path([str(tmp_path)], reader):
            gin.parse_config_file("exp.gin")
    gin.parse_config_file(str(tmp_path / "exp.gin"))
    assert gin.query_parameter(f"{MODULE}.widget.size") == 4
