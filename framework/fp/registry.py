"""Registries of named classes, filled from the ``fp_register_*`` hooks and exposed to gin.

A hook may also return a *family*: a class with a ``family_prefix`` (``"timm."``) that stands for
every name beginning with that prefix, for classes too many or too slow to create at registration
(timm's 1,371 models: importing timm takes seconds, and ``fp list`` must stay fast). Its ``name``
is what ``fp list`` shows (``timm.<model>``), its ``describe()`` the line shown there (called
then, so it may count the members), and its ``member(name)`` returns the class for a full name
such as ``timm.resnet18`` (whose ``name`` is that name) or raises an ``FpError`` saying what is
wrong. The registry asks the family on a name's first use, a lookup or a gin binding, and keeps
the class it gets, a gin configurable like any other.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gin

from fp.errors import RegistryError, did_you_mean
from fp.gin_adapter import drop_configurable, exact_names_bind, resolve_unmatched

#: registry kind -> the registration hook that fills it
KINDS = {
    "measures": "fp_register_measures",
    "architectures": "fp_register_architectures",
    "datasets": "fp_register_datasets",
    "schedules": "fp_register_schedules",
}


@dataclass
class Registry:
    """Named classes of one kind (``measures``, ...) with the plugin that provided each, and the
    families whose members are created on first use (see the module's docstring)."""

    kind: str
    classes: dict[str, type] = field(default_factory=dict)
    providers: dict[str, str] = field(default_factory=dict)  # by class name and family name
    families: dict[str, type] = field(default_factory=dict)  # by family_prefix

    def add(self, cls: type, provider: str) -> None:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise RegistryError(f"plugin {provider!r} registered {cls!r} in {self.kind} without a "
                                f"string 'name' attribute.")
        prefix = getattr(cls, "family_prefix", None)
        if prefix is not None:
            self._add_family(cls, prefix, provider)
            return
        family = self.family_of(name)
        if name in self.classes or family is not None:
            first = self.providers[family.name if family is not None else name]
            raise RegistryError(f"{self.kind[:-1]} name {name!r} is registered twice: by "
                                f"{first!r} and by {provider!r}.")
        self.classes[name] = cls
        self.providers[name] = provider

    def _add_family(self, cls: type, prefix: object, provider: str) -> None:
        if not isinstance(prefix, str) or not prefix.endswith("."):
            raise RegistryError(f"plugin {provider!r} registered the family {cls.name!r} in "
                                f"{self.kind} with family_prefix {prefix!r}, which must be a "
                                f"string ending in '.'.")
        overlap = [self.providers[f.name] for p, f in self.families.items()
                   if p.startswith(prefix) or prefix.startswith(p)]
        overlap += [self.providers[n] for n in self.classes if n.startswith(prefix)]
        if overlap:
            raise RegistryError(f"{self.kind[:-1]} names starting with {prefix!r} are registered "
                                f"twice: by {overlap[0]!r} and by {provider!r} (the family "
                                f"{cls.name!r}).")
        self.families[prefix] = cls
        self.providers[cls.name] = provider

    def family_of(self, name: object) -> type | None:
        """The family whose prefix ``name`` starts with, or None."""
        if not isinstance(name, str):
            return None
        return next((f for prefix, f in self.families.items() if name.startswith(prefix)), None)

    def get(self, name: str) -> type:
        """The class registered as ``name``, created by its family on first use; a clear error
        with a suggestion otherwise."""
        try:
            return self.classes[name]
        except (KeyError, TypeError):
            family = self.family_of(name)
            if family is not None:
                return self._member(family, name)
            hint = did_you_mean(str(name), self.classes)
            raise RegistryError(f"unknown {self.kind[:-1]} {name!r}{hint}; "
                                f"`fp list {self.kind}` shows the registered ones.") from None

    def _member(self, family: type, name: str) -> type:
        """``family``'s class for ``name``, kept and made a gin configurable."""
        cls = family.member(name)
        if getattr(cls, "name", None) != name:
            raise RegistryError(f"plugin {self.providers[family.name]!r}'s family "
                                f"{family.name!r} answered {name!r} with a class named "
                                f"{getattr(cls, 'name', None)!r}.")
        self.classes[name] = cls
        self.providers[name] = self.providers[family.name]
        configurable(self.kind, cls)
        return cls

    def build(self, name: str, **kwargs: Any) -> Any:
        """Instantiate ``name`` through gin, so bindings such as ``snip.temperature`` apply."""
        return configurable(self.kind, self.get(name))(**kwargs)

    def names(self) -> list[str]:
        """The registered classes' names (a family's members once used)."""
        return sorted(self.classes)

    def listing(self) -> list[tuple[str, str, str]]:
        """``(name, description, provider)`` of every class and family, by name: what ``fp list``
        shows."""
        families = {f.name: f for f in self.families.values()}
        return [(name, self.describe(name), self.providers[name])
                for name in sorted([*self.classes, *families])]

    def describe(self, name: str) -> str:
        """The first line of the class docstring; a family's ``describe()``."""
        family = next((f for f in self.families.values() if f.name == name), None)
        if family is not None:
            return family.describe()
        doc = (self.classes[name].__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


# gin keeps one process-wide registry of configurables; a fresh plugin manager per run must reuse
# the wrapper made for a class and replace one made for another class of the same name.
_GIN_WRAPPERS: dict[tuple[str, str], tuple[type, Any]] = {}


def configurable(kind: str, cls: type) -> Any:
    """The gin configurable for ``cls``, named ``cls.name`` in gin module ``kind``."""
    key = (kind, cls.name)
    known = _GIN_WRAPPERS.get(key)
    if known is not None and known[0] is cls:
        return known[1]
    if known is not None:
        drop_configurable(f"{kind}.{cls.name}")  # gin refuses a second class under one name
    wrapper = gin.external_configurable(cls, name=cls.name, module=kind)
    _GIN_WRAPPERS[key] = (cls, wrapper)
    return wrapper


def register_with_gin(registries: dict[str, Registry]) -> None:
    """Make every registered class a gin configurable, so its constructor arguments bind."""
    for kind, reg in registries.items():
        for cls in reg.classes.values():
            configurable(kind, cls)
    # ``vgg13.layers`` would otherwise be ambiguous between ``architectures.vgg13`` and
    # ``architectures.torchvision.vgg13`` (gin matches any dotted suffix): a selector that is
    # exactly a registered name binds that registration
    exact_names_bind(KINDS)
    # ``timm.resnet18.drop_rate = 0.1`` may name a family's member before anything asked for it
    resolve_unmatched(lambda partial: resolve_member(registries, partial))


def resolve_member(registries: dict[str, Registry], selector: str) -> bool:
    """Create the family member that the gin selector ``selector`` names (``timm.resnet18`` or
    ``architectures.timm.resnet18``); False where no family claims it."""
    for kind, reg in registries.items():
        name = selector.removeprefix(f"{kind}.")
        if reg.family_of(name) is not None:
            reg.get(name)
            return True
    return False

