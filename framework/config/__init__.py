"""Reading gin experiments: files, includes, ``--bind`` overrides, and gin's errors turned into
one-sentence ``ConfigError``s."""
from __future__ import annotations

import ast
import contextlib
import os
import re
import tokenize
from pathlib import Path
from typing import Iterator, Sequence

import gin
from gin import config as gin_config

from fp import validation
from fp.config import settings
from fp.errors import ConfigError, did_you_mean
from fp.manager import Manager

#: the folder holding framework/, plugins/ and gin/ in a source checkout (includes may name
#: 'gin/base/x.gin' from anywhere)
REPO_ROOT = Path(__file__).resolve().parents[2]  # framework/config/__init__.py -> the repository


def parse(files: Sequence[str | os.PathLike], bindings: Sequence[str], manager: Manager) -> settings.Settings:
    """Parse ``files`` then ``bindings`` into a fresh gin config and return the validated settings.

    Registry classes become configurables first, so ``snip.temperature = 1.0`` binds.
    """
    manager.registries  # registers every plugin class with gin
    gin.clear_config()
    paths = [_existing_file(f) for f in files]
    with _includes_relative_to_including_file() as opened:
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
    for (scope, selector), params in list(gin_config._CONFIG.items()):
        configurable = gin_config._REGISTRY.get(selector)
        if configurable is None:
            continue
        hints = validation.parameter_hints(configurable.wrapped)
        label = (f"{scope}/" if scope else "") + configurable.name
        for param, value in params.items():
            if param in hints:
                validation.check(f"{label}.{param}", value, hints[param])


def _existing_file(name: str | os.PathLike) -> Path:
    path = Path(name)
    if path.is_dir():
        raise ConfigError(f"config {str(name)!r} is a directory; give a .gin file inside it.")
    if not path.exists():
        raise ConfigError(f"config file {str(name)!r} does not exist.")
    try:
        path.open().close()
    except OSError as exc:
        raise ConfigError(f"config file {str(name)!r} cannot be read ({exc.strerror}).") from None
    return path.resolve()


def _parse_one(parse_fn, opened: list[Path], path: Path | None, binding: str | None = None) -> None:
    where = f"--bind {binding!r}" if binding is not None else None
    try:
        parse_fn()
    except UnicodeDecodeError:
        raise ConfigError(f"{opened[-1] if opened else path} is not UTF-8 text, so not a gin "
                          f"file.") from None
    except tokenize.TokenError:
        culprit = opened[-1] if opened else path
        line = _unclosed_line(culprit) if culprit else None
        raise ConfigError(f"gin syntax error in {where or culprit}"
                          + (f", line {line}: unclosed bracket or quote." if line else ".")) from None
    except SyntaxError as exc:
        culprit = opened[-1] if opened else path
        unclosed = _unclosed_line(culprit) if culprit and not where else None
        line, reason = (unclosed, "unclosed bracket or quote") if unclosed else (exc.lineno, _first_line(exc.msg))
        raise ConfigError(f"gin syntax error in {where or culprit}, line {line}: {reason}.") from None
    except (ValueError, IOError, OSError) as exc:
        raise ConfigError(_explain(str(exc), where)) from None


def _first_line(message: str) -> str:
    return str(message).strip().splitlines()[0].rstrip(".") if str(message).strip() else "invalid syntax"


def _explain(message: str, where: str | None) -> str:
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
        hint = did_you_mean(param.group(2), _parameters_of(param.group(1)))
    unopened = re.match(r"Unable to open file: (\S+)\.", first)
    if unopened:
        first = f"included file {unopened.group(1)!r} was not found next to the including file or in {REPO_ROOT}"
    sentence = first.rstrip(".") + hint
    return f"{sentence} ({place})." if place else f"{sentence}."


def _configurable_names() -> list[str]:
    names = set()
    for selector, _ in gin_config._REGISTRY.items():  # gin has no public listing of configurables
        names.add(selector)
        names.add(selector.rsplit(".", 1)[-1])
    return sorted(names)


def _parameters_of(name: str) -> list[str]:
    try:
        fn = gin_config._REGISTRY.get_match(name).wrapped
    except Exception:
        return []
    import inspect
    target = fn.__init__ if isinstance(fn, type) else fn
    return [p for p in inspect.signature(target).parameters if p != "self"]


def _unclosed_line(path: Path) -> int | None:
    """The line where the statement with an unclosed bracket or string starts."""
    depth, start = 0, None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        code = re.sub(r"'[^']*'|\"[^\"]*\"", "", line.split("#", 1)[0])
        if depth == 0 and code.strip():
            start = number
        depth += code.count("(") + code.count("[") + code.count("{")
        depth -= code.count(")") + code.count("]") + code.count("}")
        if code.count("'") % 2 or code.count('"') % 2:
            return number
    return start if depth > 0 else None


@contextlib.contextmanager
def _includes_relative_to_including_file() -> Iterator[list[Path]]:
    """Resolve ``include 'x.gin'`` against the including file's folder first, then the current
    folder and the repository root. gin only offers search paths, so while a file is open its
    folder is put first in gin's search list (a private list, restored afterwards)."""
    opened: list[Path] = []
    prefixes, readers = list(gin_config._LOCATION_PREFIXES), list(gin_config._FILE_READERS)

    reading: list[Path] = []  # the chain of files open right now: an include cycle shows in it

    @contextlib.contextmanager
    def reader(path: str):
        resolved = Path(path).resolve()
        if resolved in reading:
            chain = " -> ".join(p.name for p in [*reading[reading.index(resolved):], resolved])
            raise ConfigError(f"{resolved} includes itself ({chain}).")
        opened.append(resolved)
        reading.append(resolved)
        gin_config._LOCATION_PREFIXES.insert(0, str(resolved.parent))
        try:
            with open(path, encoding="utf-8") as handle:
                yield handle
        finally:
            gin_config._LOCATION_PREFIXES.remove(str(resolved.parent))
            reading.pop()

    gin_config._LOCATION_PREFIXES[:] = ["", str(REPO_ROOT), str(REPO_ROOT / "gin")]
    gin_config._FILE_READERS[:] = [(reader, os.path.isfile)]
    try:
        yield opened
    finally:
        gin_config._LOCATION_PREFIXES[:] = prefixes
        gin_config._FILE_READERS[:] = readers


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
