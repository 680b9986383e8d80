"""``fp sweep``: one experiment run for every point of a grid of gin bindings, one after another.

Each point runs into ``OUT/<run name>``; the name is readable and ends in a hash of the bindings,
so re-running the same sweep finds its finished runs and skips them (a sweep resumes).
"""
from __future__ import annotations

import ast
import hashlib
import itertools
import re
from pathlib import Path
from typing import Any, Callable, Sequence

from rich.table import Table
from rich.text import Text

from fp.engine import rundir
from fp.engine.experiment import run_experiment
from fp.config import gin_literal, parse as parse_config
from fp.errors import ConfigError, FpError, RegistryError
from fp.manager import make_manager

#: a gin binding's name: ``prune.measure``, ``architectures.vgg13.width``, ``scope/train.lr``
NAME = re.compile(r"^[A-Za-z_][\w./]*\.\w+$")
#: longest readable part of a run name, in characters (file names are capped at 255)
READABLE_MAX = 80
#: what each row of a sweep reports
ROW_KEYS = ("name", "bindings", "status", "test_acc", "best_test_acc", "filters_kept_frac",
            "wall_time_s", "error", "out_dir")


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


def sweep(config: str | Path | Sequence[str | Path], grid: Sequence[str], *,
          bindings: Sequence[str] = (), out: str | Path, device: str | None = None,
          runner: Callable[..., Any] = run_experiment,
          on_update: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Run ``config`` once per grid point into ``out/<run_name>``, skipping finished runs; a run
    that fails with an fp error is recorded as failed and the sweep goes on. ``on_update(rows)``
    is called whenever a run starts or ends. Returns one row per grid point (see ROW_KEYS)."""
    files = [str(config)] if isinstance(config, (str, Path)) else [str(c) for c in config]
    if Path(out).exists() and not Path(out).is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory.")
    points = expand_grid(grid)
    check_no_overlap(grid, bindings)
    prefix = Path(files[-1]).stem if files else "run"
    rows = [new_row(point, run_name([*point, *bindings], prefix), Path(out)) for point in points]
    check_points(files, bindings, [r for r in rows if not finished(r)])
    notify = on_update or (lambda rows: None)
    notify(rows)
    for row in rows:
        if finished(row):
            row.update(status="skipped (finished)",
                       **results(rundir.read_summary(Path(row["out_dir"]))))
        else:
            row["status"] = "running"
            notify(rows)
            run_one(row, files, [*bindings, *row["bindings"]], device, runner)
        notify(rows)
    return rows


def check_no_overlap(grid: Sequence[str], bindings: Sequence[str]) -> None:
    swept = {arg.partition("=")[0].strip() for arg in grid}
    for binding in bindings:
        name = binding.partition("=")[0].strip()
        if name in swept:
            raise ConfigError(f"{name} is both bound (--bind) and swept (--grid); drop one of them.")


def check_points(files: list[str], bindings: Sequence[str], rows: list[dict]) -> None:
    """Parse every grid point before the first run starts, so a misspelt value fails the sweep
    now rather than hours later when its turn comes."""
    if not rows:
        return
    manager = make_manager()
    for row in rows:
        try:
            parse_config(files, [*bindings, *row["bindings"]], manager)
        except (ConfigError, RegistryError) as exc:
            raise type(exc)(f"grid point {' '.join(row['bindings'])}: {exc}") from None


def new_row(point: list[str], name: str, out: Path) -> dict[str, Any]:
    row = dict.fromkeys(ROW_KEYS)
    row.update(name=name, bindings=point, status="pending", out_dir=str(out / name))
    return row


def finished(row: dict[str, Any]) -> bool:
    return (Path(row["out_dir"]) / "summary.json").exists()


def run_one(row: dict[str, Any], files: list[str], bindings: list[str], device: str | None,
            runner: Callable[..., Any]) -> None:
    try:
        outcome = runner(files, bindings, out=Path(row["out_dir"]), device=device, quiet=True)
    except FpError as exc:
        row.update(status="failed", error=str(exc))
        return
    status = ("skipped (finished)" if outcome.already_finished
              else "done (resumed)" if outcome.resumed else "done")
    row.update(status=status, **results(outcome.summary))


def results(summary: dict[str, Any]) -> dict[str, Any]:
    kept, dense = summary.get("filters_kept"), summary.get("dense_filters")
    return {"test_acc": summary.get("test_acc"), "best_test_acc": summary.get("best_test_acc"),
            "filters_kept_frac": kept / dense if kept is not None and dense else None,
            "wall_time_s": summary.get("wall_time_s")}


STATUS_STYLE = {"pending": "dim", "running": "bold yellow", "failed": "bold red"}


def live_table(rows: Sequence[dict]) -> Table:
    """The sweep's progress as a rich table (for ``rich.live.Live``)."""
    table = Table("#", "run", "status", "test acc", "best", "filters kept", "time",
                  title="sweep", title_justify="left")
    for number, row in enumerate(rows, 1):
        status = f"failed: {row['error']}" if row["error"] else row["status"]
        # Text, not markup: an error message may contain [brackets]
        table.add_row(str(number), Text(row["name"]),
                      Text(status, style=STATUS_STYLE.get(row["status"], "green")),
                      percent(row["test_acc"]), percent(row["best_test_acc"]),
                      percent(row["filters_kept_frac"]),
                      "" if row["wall_time_s"] is None else f"{row['wall_time_s']:.0f}s")
    return table


def percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}%"
