"""What the ``fp`` commands share: the consoles, tables that stay greppable when piped, the run
summary line, and the ``--device`` and ``--executor`` checks. Imports nothing heavy: ``fp --help`` stays fast."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

# never break long paths across lines; no markup: a message or path with [brackets] prints as is
out = Console(soft_wrap=True, markup=False)
err = Console(stderr=True, soft_wrap=True, markup=False)


def device_option(value: str | None) -> str | None:
    """A misspelt device is a usage error (exit 2); whether it exists is checked with the rest of
    the settings, once torch is loaded."""
    from fp import device

    if value is not None and not device.well_spelt(value):
        raise typer.BadParameter(f"{value!r} is not a device; use {device.FORMS}.")
    return value


def executor_option(value: str) -> str:
    """Where ``fp sweep`` runs its points: one of ``fp.tools.sweep.EXECUTORS`` (imported here,
    when ``fp sweep`` parses its options, since it runs the sweep anyway)."""
    from fp.tools.sweep import EXECUTORS

    if value not in EXECUTORS:
        raise typer.BadParameter(f"{value!r} is not an executor; use "
                                 f"{' or '.join(map(repr, EXECUTORS))}.")
    return value


def print_summary(s: dict, out_dir: Path) -> None:
    out.print(f"test_acc {s['test_acc']:.4f}  best {s['best_test_acc']:.4f}  "
              f"filters kept {s['filters_kept']}/{s['dense_filters']}  "
              f"params {s['params']}/{s['dense_params']}  world_size {s['world_size']}  -> {out_dir}")


def print_table(headers: tuple[str, ...], rows: list[tuple[str, ...]], title: str | None = None) -> None:
    """A rich table on a terminal; one tab-separated line per row when piped (greppable, never
    wrapped)."""
    if out.is_terminal:
        table = Table(*headers, title=title)
        for row in rows:
            table.add_row(*row)
        out.print(table)
        return
    if title:
        print(f"# {title}")
    for row in rows:
        print("\t".join(row))
