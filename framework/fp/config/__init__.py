"""Reading gin experiments: files, includes, ``--bind`` overrides, and gin's errors turned into
one-sentence ``ConfigError``s."""
from __future__ import annotations

import ast
import os
import re
import tokenize
from pathlib import Path
from typing import Sequence

import gin

from fp import gin_adapter, validation
from fp.config import cluster, settings  # cluster: the slurm block gin files may bind
from fp.config.files import (SHIPPED, existing_file, includes_relative_to_including_file,
                             unclosed_line)
from fp.config.messages import explain, first_line
from fp.errors import ConfigError
from fp.manager import Manager

__all__ = ["SHIPPED", "bare_words_quoted", "check_bound_values", "cluster", "config_text",
           "gin_literal", "operative_text", "parse", "parse_recorded", "settings"]


def parse(files: Sequence[str | os.PathLike], bindings: Sequence[str], manager: Manager) -> settings.Settings:
    """Parse ``files`` then ``bindings`` into a fresh gin config and return the validated settings.

    Registry classes become configurables first, so ``snip.temperature = 1.0`` binds.
    """
    manager.registries  # registers every plugin class with gin
    gin.clear_config()
    paths = [existing_file(f) for f in files]
    with includes_relative_to_including_file() as opened:
        for path in paths:
            _parse_one(lambda p=path: gin.parse_config_file(str(p)), opened, path)
        for binding in bindings:
            text = bare_words_quoted(binding)
            _parse_one(lambda b=text: gin.parse_config(b), opened, None, binding)
    check_bound_values()
    resolved = settings.resolve()
    _check_names(resolved, manager)
    return resolved


def parse_recorded(path: Path, manager: Manager) -> settings.Settings:
    """Parse a run directory's recorded ``config.gin``. fp writes bindings only, so a file with
    ``import`` or ``include`` lines was not written by fp and is refused unread: reading it
    would import modules or open other files that the file names."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} cannot be read ({exc}).") from None
    for number, line in enumerate(lines, 1):
        if re.match(r"\s*(import|from|include)\s", line):
            raise ConfigError(f"{path}, line {number}: a recorded run config holds bindings only, "
                              f"not {line.split()[0]!r} statements; it was refused unread.")
    return parse([path], [], manager)


def bare_words_quoted(binding: str) -> str:
    """``--bind imagefolder.root=/data/cifar`` as ``imagefolder.root = '/data/cifar'``: a
    one-line binding whose value is a bare word reads as that string, as on ``--grid``."""
    name, equals, value = binding.partition("=")
    if (not equals or "\n" in binding or "#" in value or not value.strip()
            or not re.fullmatch(r"\s*[\w./]+\s*", name)):
        return binding
    return f"{name.strip()} = {gin_literal(value.strip(), binding, '--bind')}"


def gin_literal(value: str, arg: str, option: str = "--grid") -> str:
    """``value`` as gin reads it: literals and ``@references``/``%MACROS`` as given, a bare word
    (``snip``, ``cuda:0``, ``/data/cifar``) quoted as a string."""
    if value[0] in "@%":
        return value
    try:
        ast.literal_eval(value)
        return value
    except (ValueError, SyntaxError):
        if value[0] in "([{'\"":
            raise ConfigError(f"{option} {arg!r}: {value!r} is not a valid literal.") from None
        return repr(value)


def check_bound_values() -> None:
    """Check every bound value against the annotation of the parameter it binds (settings
    fields, plugin constructor arguments, configurable functions) before anything is built."""
    for bound in gin_adapter.bound_values():
        hints = validation.parameter_hints(bound.target)
        label = (f"{bound.scope}/" if bound.scope else "") + bound.name
        for param, value in bound.values.items():
            if param in hints:
                validation.check(f"{label}.{param}", value, hints[param])


def _parse_one(parse_fn, opened: list[Path], path: Path | None, binding: str | None = None) -> None:
    where = f"--bind {binding!r}" if binding is not None else None
    try:
        parse_fn()
    except UnicodeDecodeError:
        raise ConfigError(f"{opened[-1] if opened else path} is not UTF-8 text, so not a gin "
                          f"file.") from None
    except tokenize.TokenError:
        culprit = opened[-1] if opened else path
        line = unclosed_line(culprit) if culprit else None
        raise ConfigError(f"gin syntax error in {where or culprit}"
                          + (f", line {line}: unclosed bracket or quote." if line else ".")) from None
    except SyntaxError as exc:
        culprit = opened[-1] if opened else path
        unclosed = unclosed_line(culprit) if culprit and not where else None
        line, reason = (unclosed, "unclosed bracket or quote") if unclosed else (exc.lineno, first_line(exc.msg))
        raise ConfigError(f"gin syntax error in {where or culprit}, line {line}: {reason}.") from None
    except (ValueError, IOError, OSError) as exc:
        raise ConfigError(explain(str(exc), where)) from None


def _check_names(resolved: settings.Settings, manager: Manager) -> None:
    """Fail early, with a suggestion, on a misspelt measure, architecture, dataset or schedule."""
    regs = manager.registries
    regs["measures"].get(resolved.prune.measure)
    regs["architectures"].get(resolved.model.architecture)
    regs["datasets"].get(resolved.data.dataset)
    regs["schedules"].get(resolved.prune.schedule)


def config_text() -> str:
    """Every binding in force (gin's ``config_str``): what a resume compares against."""
    return gin.config_str()


def operative_text() -> str:
    """The bindings actually used so far, with defaults (gin's operative config)."""
    return gin.operative_config_str()
