"""The grid of the sweeps run into a folder, kept in that folder (``sweep_grid.json``) for
whatever compares its runs: every name a sweep into the folder varies, with its values.

``sweep`` calls ``record_sweep`` before its first point runs; it writes the record beside the run
directories, and a run (or a plugin: the TensorBoard plugin makes every swept name a default
HParams column) reads it from its parent folder with ``folder_grid``. A later sweep into the same
folder adds its names and values to the record.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from fp.atomic import atomic_write
from fp.errors import ConfigError

#: the record's file name, in the sweep folder
RECORD = "sweep_grid.json"


def record_sweep(folder: Path, points: Sequence[Sequence[str]]) -> None:
    """Add the gin bindings of a sweep's grid points (``["prune.measure='snip'", ...]`` each) to
    ``folder``'s record: every swept name with its values, as the gin literals the grid gave."""
    grid = read_grid(folder)
    for point in points:
        for binding in point:
            name, _, value = binding.partition("=")
            values = grid.setdefault(name.strip(), [])
            if value.strip() not in values:
                values.append(value.strip())
    # whole or not at all, as the engine writes a run's files
    atomic_write(Path(folder) / RECORD,
                 lambda handle: handle.write((json.dumps({"grid": grid}, indent=2) + "\n").encode()))


def folder_grid(run_dir: Path) -> dict[str, list[str]]:
    """Swept name -> its gin literals, over every sweep run into ``run_dir``'s parent folder;
    empty for a run that is not in a sweep folder."""
    return read_grid(Path(run_dir).resolve().parent)


def read_grid(folder: Path) -> dict[str, list[str]]:
    path = Path(folder) / RECORD
    if not path.is_file():
        return {}
    try:
        grid = json.loads(path.read_text())["grid"]
        valid = isinstance(grid, dict) and all(
            isinstance(values, list) and all(isinstance(v, str) for v in values)
            for values in grid.values())
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise ConfigError(f"{path} is not the grid record fp sweep writes; delete it and run the "
                          f"sweep again to write it anew.")
    return grid
