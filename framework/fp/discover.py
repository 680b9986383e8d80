"""Find the plugin classes in a package's modules, so adding one is adding one file."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable


def classes_in_package(package: str, accept: Callable[[type], bool]) -> list[type]:
    """Every class defined in a (non-underscore) module of ``package`` that ``accept`` takes and
    that has a non-empty string ``name``; ordered by module, then by definition."""
    pkg = importlib.import_module(package)
    found: list[type] = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        for obj in vars(module).values():
            if (isinstance(obj, type) and obj.__module__ == module.__name__
                    and isinstance(getattr(obj, "name", None), str) and obj.name
                    and accept(obj)):
                found.append(obj)
    return found
