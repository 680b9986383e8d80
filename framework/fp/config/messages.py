"""gin's multi-line messages as one sentence, with a suggestion for a misspelt name."""
from __future__ import annotations

import re

from fp import gin_adapter
from fp.config.files import SHIPPED
from fp.errors import did_you_mean


def first_line(message: str) -> str:
    return str(message).strip().splitlines()[0].rstrip(".") if str(message).strip() else "invalid syntax"


def explain(message: str, where: str | None) -> str:
    """Turn gin's multi-line message into one sentence, with a suggestion for unknown names."""
    first, _, rest = message.partition("\n")
    location = re.search(r'In (?:file "([^"]+)", line (\d+)|bindings string line \d+)', rest)
    place = where or (f"{location.group(1)}, line {location.group(2)}" if location and location.group(1) else "")
    hint = ""
    unknown = re.match(r"No configurable matching '([^']+)'", first)
    if unknown:
        hint = did_you_mean(unknown.group(1), _configurable_names())
    param = re.match(r"Configurable '([^']+)' doesn't have a parameter named '([^']+)'", first)
    if param:
        hint = did_you_mean(param.group(2), gin_adapter.parameters_of(param.group(1)))
    unopened = re.match(r"Unable to open file: (\S+)\.", first)
    if unopened:
        first = f"included file {unopened.group(1)!r} was not found next to the including file or among the shipped experiments ({SHIPPED / 'gin'})"
    sentence = first.rstrip(".") + hint
    return f"{sentence} ({place})." if place else f"{sentence}."


def _configurable_names() -> list[str]:
    """Every configurable's complete selector and its last part (``measures.snip``, ``snip``)."""
    names = set()
    for selector in gin_adapter.configurable_names():
        names.add(selector)
        names.add(selector.rsplit(".", 1)[-1])
    return sorted(names)

