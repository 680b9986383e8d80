"""Which file a config name means: the path itself or a shipped experiment, the shipped
experiments listed, ``include`` resolved against the including file, and the line of an unclosed
bracket or quote (gin reports the end of the file)."""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import IO, Iterator

from fp import gin_adapter
from fp.errors import ConfigError

#: the shipped experiments: ``SHIPPED / "gin"`` holds the repository's gin/ folder (in a checkout a
#: link to it, in an installed wheel a copy), so 'gin/quickstart.gin' names the same file anywhere
SHIPPED = Path(__file__).resolve().parents[1] / "experiments"


def shipped_file(name: str | os.PathLike) -> Path | None:
    """The shipped experiment a config path names, if the path itself does not exist: 'gin/x.gin'
    and 'x.gin' both name gin/x.gin of the installed package."""
    parts = Path(name).parts
    if Path(name).is_absolute() or ".." in parts or not parts:
        return None
    for candidate in (SHIPPED / Path(*parts), SHIPPED / "gin" / Path(*parts)):
        if candidate.is_file():
            return candidate
    return None


def shipped_experiments() -> list[tuple[str, str]]:
    """Every shipped experiment (gin/..., not the shared base/ parts) with its first comment line."""
    root = SHIPPED / "gin"
    rows = []
    for path in sorted(root.rglob("*.gin")):
        relative = path.relative_to(root)
        if "base" in relative.parts:
            continue
        first = next((line.lstrip("# ").strip() for line in path.read_text().splitlines()
                      if line.startswith("#")), "")
        rows.append((f"gin/{relative.as_posix()}", first))
    return rows


def existing_file(name: str | os.PathLike) -> Path:
    """The config file ``name`` names: the path itself, or else a shipped experiment."""
    path = Path(name)
    if path.is_dir():
        raise ConfigError(f"config {str(name)!r} is a directory; give a .gin file inside it.")
    if not path.exists():
        path = shipped_file(name)
        if path is None:
            raise ConfigError(f"config file {str(name)!r} does not exist, here or among the shipped "
                              f"experiments (fp list experiments).")
    try:
        path.open().close()
    except OSError as exc:
        raise ConfigError(f"config file {str(name)!r} cannot be read ({exc.strerror}).") from None
    return path.resolve()


def unclosed_line(path: Path) -> int | None:
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
def includes_relative_to_including_file() -> Iterator[list[Path]]:
    """Resolve ``include 'x.gin'`` against the including file's folder first, then the current
    folder and the shipped experiments (so 'gin/base/x.gin' works from anywhere). gin only offers
    search paths, so while a file is open its folder is searched first. Yields the files opened
    so far, in order; an include cycle is refused with the chain of files."""
    opened: list[Path] = []
    reading: list[Path] = []  # the chain of files open right now: an include cycle shows in it

    @contextlib.contextmanager
    def reader(path: str) -> Iterator[IO[str]]:
        resolved = Path(path).resolve()
        if resolved in reading:
            chain = " -> ".join(p.name for p in [*reading[reading.index(resolved):], resolved])
            raise ConfigError(f"{resolved} includes itself ({chain}).")
        opened.append(resolved)
        reading.append(resolved)
        try:
            with gin_adapter.searched_first(resolved.parent), \
                    open(path, encoding="utf-8") as handle:
                yield handle
        finally:
            reading.pop()

    with gin_adapter.search_path(["", str(SHIPPED), str(SHIPPED / "gin")], reader):
        yield opened
