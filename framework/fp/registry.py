"""Registries of named classes, filled from the ``fp_register_*`` hooks and exposed to gin."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gin

from fp.errors import RegistryError, did_you_mean
from fp.gin_adapter import drop_configurable, exact_names_bind

#: registry kind -> the registration hook that fills it
KINDS = {
    "measures": "fp_register_measures",
    "architectures": "fp_register_architectures",
    "datasets": "fp_register_datasets",
    "schedules": "fp_register_schedules",
}


@dataclass
class Registry:
    """Named classes of one kind (``measures``, ...) with the plugin that provided each."""

    kind: str
    classes: dict[str, type] = field(default_factory=dict)
    providers: dict[str, str] = field(default_factory=dict)

    def add(self, cls: type, provider: str) -> None:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise RegistryError(f"plugin {provider!r} registered {cls!r} in {self.kind} without a "
                                f"string 'name' attribute.")
        if name in self.classes:
            raise RegistryError(f"{self.kind[:-1]} name {name!r} is registered twice: by "
                                f"{self.providers[name]!r} and by {provider!r}.")
        self.classes[name] = cls
        self.providers[name] = provider

    def get(self, name: str) -> type:
        """The class registered as ``name``; a clear error with a suggestion otherwise."""
        try:
            return self.classes[name]
        except (KeyError, TypeError):
            hint = did_you_mean(str(name), self.classes)
            raise RegistryError(f"unknown {self.kind[:-1]} {name!r}{hint}; "
                                f"`fp list {self.kind}` shows the registered ones.") from None

    def build(self, name: str, **kwargs: Any) -> Any:
        """Instantiate ``name`` through gin, so bindings such as ``snip.temperature`` apply."""
        return configurable(self.kind, self.get(name))(**kwargs)

    def names(self) -> list[str]:
        return sorted(self.classes)

    def describe(self, name: str) -> str:
        """The first line of the class docstring."""
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

