"""The one place fp reaches into gin's private state.

gin's public API covers binding, querying and parsing, but not everything fp needs: listing the
configurables (for did-you-mean hints), reading the bindings in force with their target (to check
values before anything is built), dropping a configurable (a fresh plugin manager may register
another class under the same name), letting a registered name bind exactly, registering a
configurable when a binding first names it, and resolving ``include`` against the including
file. Each function below says which private gin name it
relies on and why there is no public way. Nothing else in fp or fp_builtins touches a private
name of gin (tests/test_gin_adapter.py checks both that and the versions in
``CHECKED_GIN_VERSIONS``), so a gin release that moves one of them breaks this module only.

This module sits at the bottom of fp's import graph: it imports gin and nothing of fp.
"""
from __future__ import annotations

import contextlib
import inspect
import os
from dataclasses import dataclass
from typing import IO, Any, Callable, ContextManager, Iterable, Iterator, Sequence

from gin import config as gin_config

#: the gin-config releases this module was checked on (tests/test_gin_adapter.py must pass on
#: each); a new release is added here only after those tests pass with it installed
CHECKED_GIN_VERSIONS = ("0.5.0",)

#: what gin calls to open a config file: ``reader(path)`` used as ``with reader(path) as f``
Reader = Callable[[str], ContextManager[IO[str]]]


@dataclass(frozen=True)
class BoundValues:
    """The parameters one ``scope/name`` binding sets, with the callable they bind."""

    scope: str        # "" outside a scope
    name: str         # the configurable's name, as gin reports it
    target: Callable[..., Any]  # the class or function the configurable wraps
    values: dict[str, Any]      # parameter -> bound value (references and macros unresolved)


def configurable_names() -> list[str]:
    """The complete selectors (``measures.snip``, ``train``) of every registered configurable.

    Relies on ``gin.config._REGISTRY`` (a ``SelectorMap``) and its ``items()``: gin has no public
    listing of configurables."""
    return sorted(selector for selector, _ in gin_config._REGISTRY.items())


def parameters_of(name: str) -> list[str]:
    """The parameter names of the configurable ``name`` (a partial selector, as in a binding),
    ``self`` left out; ``[]`` where ``name`` matches no configurable or several.

    Relies on ``gin.config._REGISTRY.get_match`` and the matched entry's ``wrapped``: gin's
    public ``get_configurable`` returns a decorated wrapper whose signature is not the wrapped
    callable's, and it raises for an unknown name rather than answering none."""
    try:
        found = gin_config._REGISTRY.get_match(name)
    except (KeyError, ValueError):  # ambiguous
        return []
    if found is None:
        return []
    target = found.wrapped.__init__ if isinstance(found.wrapped, type) else found.wrapped
    try:
        return [p for p in inspect.signature(target).parameters if p != "self"]
    except (TypeError, ValueError):  # a builtin without a signature
        return []


def bound_values() -> Iterator[BoundValues]:
    """Every binding in force whose configurable is registered, in gin's order.

    Relies on ``gin.config._CONFIG`` (``(scope, selector) -> {parameter: value}``) and
    ``gin.config._REGISTRY.get``: gin publishes bindings only as text (``config_str``) or one
    parameter at a time (``query_parameter``, which needs the names in advance)."""
    for (scope, selector), params in list(gin_config._CONFIG.items()):
        configurable = gin_config._REGISTRY.get(selector)
        if configurable is None:
            continue
        yield BoundValues(scope or "", configurable.name, configurable.wrapped, dict(params))


def drop_configurable(selector: str) -> None:
    """Forget the configurable registered as the complete selector ``selector`` (if any), so
    another class may be registered under that name.

    Relies on ``gin.config._REGISTRY.pop``: gin has no public way to unregister; it refuses to
    register a second callable under a taken name outside interactive mode."""
    if selector in gin_config._REGISTRY:
        gin_config._REGISTRY.pop(selector)


#: the gin modules whose names bind exactly (see ``exact_names_bind``)
_EXACT_MODULES: set[str] = set()
#: asked about a partial selector that matches no configurable (see ``resolve_unmatched``)
_RESOLVER: list[Callable[[str], bool]] = []


def exact_names_bind(modules: Iterable[str]) -> None:
    """Let ``name`` select ``<module>.name`` for each of ``modules`` when it would otherwise be
    ambiguous (``vgg13`` between ``architectures.vgg13`` and ``architectures.torchvision.vgg13``,
    since gin matches any dotted suffix). gin already prefers an exact complete selector; this
    extends that to a name directly under one of ``modules``. Calling again adds modules.

    Relies on ``gin.config._REGISTRY.matching_selectors`` (every lookup of a partial selector,
    ``get_match`` included, goes through it), replaced on the registry instance by a wrapper:
    gin has no public hook for selector matching."""
    _EXACT_MODULES.update(modules)
    _match_through_fp()


def resolve_unmatched(resolver: Callable[[str], bool] | None) -> None:
    """Let ``resolver`` register configurables on demand: gin passes it a partial selector that
    matches no configurable and looks again when it answers True (it registered one). fp's
    registries use it for families too large to register up front, so that
    ``timm.resnet18.drop_rate = 0.1`` binds before anything has asked for ``timm.resnet18``. The
    last resolver set is the one asked (None: none is); an error it raises reaches whoever looked
    the selector up (gin's parser, for a binding).

    Relies on ``gin.config._REGISTRY.matching_selectors``, wrapped as for ``exact_names_bind``:
    gin registers configurables only when asked to, and has no hook for a name it lacks."""
    _RESOLVER[:] = [resolver] if resolver is not None else []
    _match_through_fp()


def _match_through_fp() -> None:
    """Route gin's partial-selector matching through ``exact_names_bind``'s exact names and
    ``resolve_unmatched``'s resolver (installed once, on gin's registry instance)."""
    registry = gin_config._REGISTRY
    if getattr(registry, "_fp_exact_names", False):
        return
    plain = type(registry).matching_selectors.__get__(registry)

    def matching_selectors(partial: str) -> list[str]:
        found = plain(partial)
        if not found and _RESOLVER and _RESOLVER[0](partial):
            found = plain(partial)
        if len(found) > 1:
            exact = [s for s in found
                     if s.partition(".")[0] in _EXACT_MODULES and s.partition(".")[2] == partial]
            if len(exact) == 1:
                return exact
        return found

    registry.matching_selectors = matching_selectors
    registry._fp_exact_names = True


@contextlib.contextmanager
def search_path(prefixes: Sequence[str], reader: Reader,
                is_readable: Callable[[str], bool] = os.path.isfile) -> Iterator[None]:
    """While inside, gin looks for a config file (a relative ``parse_config_file`` path or an
    ``include``) under each of ``prefixes`` in order and opens it with ``reader`` only; gin's own
    search list and readers are restored on leaving.

    Relies on ``gin.config._LOCATION_PREFIXES`` and ``gin.config._FILE_READERS``: the public
    ``add_config_file_search_path`` and ``register_file_reader`` only append, forever, and gin
    would try its default ``open`` first."""
    saved = list(gin_config._LOCATION_PREFIXES), list(gin_config._FILE_READERS)
    gin_config._LOCATION_PREFIXES[:] = list(prefixes)
    gin_config._FILE_READERS[:] = [(reader, is_readable)]
    try:
        yield
    finally:
        gin_config._LOCATION_PREFIXES[:], gin_config._FILE_READERS[:] = saved


@contextlib.contextmanager
def searched_first(folder: str | os.PathLike) -> Iterator[None]:
    """While inside, gin looks for config files in ``folder`` before its other search paths (a
    reader given to ``search_path`` uses it to resolve includes against the file it opens).

    Relies on ``gin.config._LOCATION_PREFIXES``, changed in place since gin is iterating over it
    at that moment: gin has no public way to put a search path first or take one away."""
    prefix = str(folder)
    gin_config._LOCATION_PREFIXES.insert(0, prefix)
    try:
        yield
    finally:
        gin_config._LOCATION_PREFIXES.remove(prefix)
