"""Grid points and run names of ``fp sweep``: ``--grid 'a.b=v1,v2'`` arguments expanded into
lists of gin bindings, and a stable, readable directory name for each point."""
from __future__ import annotations

import ast
import hashlib
import itertools
import re
from typing import Sequence

from fp.config import gin_literal
from fp.errors import ConfigError

#: a gin binding's name: ``prune.measure``, ``architectures.vgg13.width``, ``scope/train.lr``
NAME = re.compile(r"^[A-Za-z_][\w./]*\.\w+$")
#: longest readable part of a run name, in characters (file names are capped at 255)
READABLE_MAX = 80


def expand_grid(grid: Sequence[str]) -> list[list[str]]:
    """The cartesian product of ``'a.b=v1,v2'`` grid arguments, as lists of gin bindings.

    Values are gin literals split on top-level commas (a tuple ``('fc',)`` stays whole); a bare
    word is read as a string: ``prune.measure=magnitude,snip`` -> ``prune.measure='magnitude'``.
    """
    axes: list[list[str]] = []
    seen: set[str] = set()
    for arg in grid:
        name, values = parse_grid_arg(arg)
        if name in seen:
            raise ConfigError(f"--grid names {name} twice; give all its values in one --grid.")
        seen.add(name)
        axes.append([f"{name}={value}" for value in values])
    return [list(point) for point in itertools.product(*axes)]


def parse_grid_arg(arg: str) -> tuple[str, list[str]]:
    name, equals, text = arg.partition("=")
    name = name.strip()
    if not equals or not NAME.match(name):
        raise ConfigError(f"--grid {arg!r} is not of the form 'a.b=v1,v2'.")
    values = split_top_level(text, arg)
    if not text.strip() or any(not v.strip() for v in values):
        raise ConfigError(f"--grid {arg!r} has an empty value; separate values by single commas.")
    return name, [gin_literal(v.strip(), arg) for v in values]


def split_top_level(text: str, arg: str) -> list[str]:
    """Split on commas outside brackets and quotes."""
    parts, current, depth, quote = [], [], 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if quote or depth:
        raise ConfigError(f"--grid {arg!r} has an unclosed bracket or quote.")
    return parts + ["".join(current)]


def run_name(bindings: Sequence[str], prefix: str) -> str:
    """``<prefix>-<key=value>...-<hash>``: the readable part is the prefix (the config's stem) and
    each binding's last name part and value, safe for file systems and capped at READABLE_MAX
    characters; the hash is 8 hex digits of sha1 over the sorted bindings given on top of the
    config, so the name depends on exactly those and never on their order."""
    canonical = sorted(canonical_binding(b) for b in bindings)
    digest = hashlib.sha1("\n".join(canonical).encode()).hexdigest()[:8]
    readable = "-".join([prefix] + [short_binding(b) for b in bindings])
    readable = re.sub(r"[^\w.=+-]+", "_", readable).strip("._-")[:READABLE_MAX].rstrip("._-")
    return f"{readable}-{digest}" if readable else digest


def canonical_binding(binding: str) -> str:
    """``name=value`` with spacing removed and a literal value written one way (``0.50`` = ``0.5``)."""
    name, _, value = binding.partition("=")
    value = value.strip()
    try:
        value = repr(ast.literal_eval(value))
    except (ValueError, SyntaxError):
        pass
    return f"{name.strip()}={value}"


def short_binding(binding: str) -> str:
    name, _, value = binding.partition("=")
    value = re.sub(r"[\s'\"()\[\]{}]", "", value).replace(",", "+").strip("+")
    return f"{name.strip().rsplit('.', 1)[-1]}={value or 'empty'}"


def check_no_overlap(grid: Sequence[str], bindings: Sequence[str]) -> None:
    swept = {arg.partition("=")[0].strip() for arg in grid}
    for binding in bindings:
        name = binding.partition("=")[0].strip()
        if name in swept:
            raise ConfigError(f"{name} is both bound (--bind) and swept (--grid); drop one of them.")
