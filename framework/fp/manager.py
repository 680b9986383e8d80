"""The plugin manager factory: a fresh manager per run, never an import-time global.

Order: hookspecs -> built-ins -> third-party entry points (group ``fp``) -> check for misspelt
hook names. ``FP_DISABLE_PLUGIN_AUTOLOAD=1`` skips third-party entry points (built-ins stay);
``FP_BLOCK_PLUGINS=a,b`` blocks plugins by entry-point or distribution name.
"""
from __future__ import annotations

import functools
import importlib
import os
from dataclasses import dataclass, field
from typing import Iterable
from importlib import metadata

import pluggy

from fp import hookspecs
from fp.errors import PluginError
from fp.registry import KINDS, Registry, register_with_gin

GROUP = "fp"
AUTOLOAD_ENV = "FP_DISABLE_PLUGIN_AUTOLOAD"
BLOCK_ENV = "FP_BLOCK_PLUGINS"

OWN_DISTRIBUTION = "flowprune"


@functools.cache
def builtin_plugins() -> dict[str, str]:
    """The built-in plugins, entry-point name -> module: flowprune's own entry points of group
    ``fp`` (declared once, in pyproject.toml). They register exactly as third-party packages do,
    and stay loaded when third-party autoloading is off."""
    try:
        points = metadata.distribution(OWN_DISTRIBUTION).entry_points
    except metadata.PackageNotFoundError:
        raise PluginError("flowprune is not installed, so its built-in plugins cannot be found; "
                          "install it (pip install -e .) rather than importing it from a "
                          "source folder.") from None
    return {ep.name: ep.value for ep in points if ep.group == GROUP}


@dataclass
class PluginInfo:
    """What ``fp plugins`` shows for one plugin."""

    name: str
    distribution: str
    version: str
    hooks: list[str] = field(default_factory=list)
    error: str | None = None  # set when the plugin could not be loaded


class Manager(pluggy.PluginManager):
    """pluggy's manager plus the loading record and the registries built from it."""

    def __init__(self) -> None:
        super().__init__(GROUP)
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._registries: dict[str, Registry] | None = None

    @property
    def broken(self) -> dict[str, str]:
        """Plugins that failed to load: name -> reason."""
        return {n: i.error for n, i in self.infos.items() if i.error}

    def require_healthy(self) -> None:
        """Refuse to run with a plugin that failed to load (it may provide what the run needs)."""
        for name, reason in self.broken.items():
            raise PluginError(f"plugin {name!r} failed to load ({reason}); fix or uninstall it, or "
                              f"block it with {BLOCK_ENV}={name}.")

    def call(self, hook_name: str, **kwargs):
        """Call a lifecycle hook; an exception inside a plugin's implementation names the plugin."""
        caller = getattr(self.hook, hook_name)
        try:
            return caller(**kwargs)
        except PluginError:
            raise
        except Exception as exc:
            culprit = _raising_plugin(caller, exc)
            if culprit is None:
                raise
            raise PluginError(f"plugin {culprit!r} failed in hook {hook_name}: "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc

    @property
    def registries(self) -> dict[str, Registry]:
        """Measures, architectures, datasets and schedules by name (built on first use)."""
        if self._registries is None:
            self._registries = collect(self)
        return self._registries


def _raising_plugin(caller, exc: BaseException) -> str | None:
    """The plugin whose hook implementation appears deepest in the exception's traceback."""
    codes = {impl.function.__code__: impl.plugin_name for impl in caller.get_hookimpls()
             if hasattr(impl.function, "__code__")}
    culprit, tb = None, exc.__traceback__
    while tb is not None:
        culprit = codes.get(tb.tb_frame.f_code, culprit)
        tb = tb.tb_next
    return culprit


def blocked_names() -> set[str]:
    return {n.strip() for n in os.environ.get(BLOCK_ENV, "").split(",") if n.strip()}


def make_manager(*, autoload: bool | None = None, plugins: tuple[object, ...] = (),
                 builtins: Iterable[str] | None = None) -> Manager:
    """A fresh manager with the built-ins (all, or only those named in ``builtins``: ``fp list
    measures`` needs no architectures), the installed ``fp`` entry points (unless ``autoload``
    is False or the env var disables it) and any extra plugin objects (tests use this)."""
    pm = Manager()
    blocked = blocked_names()
    for name in blocked:
        pm.set_blocked(name)
    own = builtin_plugins()
    wanted = set(own if builtins is None else builtins)
    for name, module in own.items():
        if name not in blocked and name in wanted:
            _register(pm, name, "flowprune", _own_version(), lambda m=module: importlib.import_module(m))
    if autoload is None:
        autoload = os.environ.get(AUTOLOAD_ENV, "").lower() not in {"1", "true", "yes"}
    if autoload:
        _load_entry_points(pm, blocked)
    for i, plugin in enumerate(plugins):
        _register(pm, getattr(plugin, "__name__", f"plugin{i}"), "(in process)", "", lambda p=plugin: p)
    pm.check_pending()
    return pm


#: managers that resolve names outside a run, by (autoload, blocked) setting
_SHARED: dict[tuple[str, str], Manager] = {}


def shared_manager() -> Manager:
    """The manager that resolves plugin names outside a run (``fp.score``, ``fp.prune``,
    ``fp.load``): built on first use, then reused while the autoload and block settings stay the
    same, so a call never pays for loading plugins again. A plugin installed after the first
    lookup is seen by a new process."""
    key = (os.environ.get(AUTOLOAD_ENV, ""), os.environ.get(BLOCK_ENV, ""))
    if key not in _SHARED:
        _SHARED[key] = make_manager()
    return _SHARED[key]


def build_registered(kind: str, name: str, manager: Manager | None = None, **kwargs):
    """An instance of the class registered as ``name`` in ``kind`` (through gin, so bindings
    apply), from ``manager``'s registries or the shared ones."""
    return (manager or shared_manager()).registries[kind].build(name, **kwargs)


def _load_entry_points(pm: Manager, blocked: set[str]) -> None:
    for ep in metadata.entry_points(group=GROUP):
        dist = ep.dist.name if ep.dist else "?"
        if ep.name in blocked or dist in blocked or pm.has_plugin(ep.name) or ep.name in pm.infos:
            continue
        if dist == OWN_DISTRIBUTION:  # flowprune's own entry points: the built-ins, loaded already
            continue
        _register(pm, ep.name, dist, ep.dist.version if ep.dist else "", ep.load)


def _register(pm: Manager, name: str, dist: str, version: str, load) -> None:
    info = PluginInfo(name=name, distribution=dist, version=version)
    pm.infos[name] = info
    try:
        plugin = load()
        pm.register(plugin, name=name)
    except Exception as exc:  # a broken third-party plugin must not take fp down with it
        info.error = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
        return
    info.hooks = sorted(impl_name for impl_name, _ in _hooks_of(pm, plugin))


def _hooks_of(pm: Manager, plugin: object):
    for caller in pm.get_hookcallers(plugin) or []:
        yield caller.name, caller


def _own_version() -> str:
    try:
        return metadata.version("flowprune")
    except metadata.PackageNotFoundError:
        return "(source)"


def collect(pm: Manager) -> dict[str, Registry]:
    """Call every registration hook implementation, noting which plugin provided each class."""
    registries = {kind: Registry(kind) for kind in KINDS}
    for kind, hook_name in KINDS.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            try:
                classes = impl.function() or []
            except Exception as exc:
                raise PluginError(f"plugin {impl.plugin_name!r} failed in {hook_name}: "
                                  f"{type(exc).__name__}: {exc}") from exc
            for cls in classes:
                registries[kind].add(cls, impl.plugin_name)
    register_with_gin(registries)
    return registries
