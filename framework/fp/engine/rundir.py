"""The files of a run directory, each written atomically so a crash never leaves half a file.

A write the file system refuses for lack of space or permission is a ``StorageError`` that names
the file and says the same command resumes (``RESUME``): nothing here damages the last checkpoint
or a finished file, and no temporary file stays behind.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from fp.atomic import as_storage_error, atomic_write
from fp.engine.runlock import RESUME
from fp.errors import CheckpointError, StorageError

CHECKPOINTS = "checkpoints"
LAST = "last.pt"
#: the checkpoint kept at the end of epoch N (``experiment.keep_epochs``), beside last.pt
KEPT = re.compile(r"epoch-(\d+)\.pt")


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda h: h.write(text.encode()), then=RESUME)


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=_plain) + "\n")


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)


class MetricsLog:
    """``metrics.jsonl``: one JSON object per event, appended and flushed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, record: dict[str, Any]) -> None:
        size = self.size()
        try:
            with as_storage_error(self.path, RESUME), self.path.open("a") as handle:
                handle.write(json.dumps(record, default=_plain) + "\n")  # keeps layer order
        except StorageError:
            self._drop_partial_line(size)
            raise

    def _drop_partial_line(self, size: int) -> None:
        """A full disk can take part of a line: cut it, so the file stays one object a line
        (a resume would cut it too, back to its checkpoint)."""
        with contextlib.suppress(OSError):
            os.truncate(self.path, size)

    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def truncate(self, size: int) -> None:
        """Drop records written after the checkpoint a resume starts from."""
        if self.path.exists() and self.path.stat().st_size > size:
            with self.path.open("r+b") as handle:
                handle.truncate(size)


def save_checkpoint(out_dir: Path, state: dict[str, Any]) -> Path:
    path = out_dir / CHECKPOINTS / LAST
    atomic_write(path, lambda h: torch.save(state, h), then=RESUME)
    return path


def keep_checkpoint(out_dir: Path, epoch: int) -> Path:
    """Keep a copy of last.pt, just written at the end of ``epoch``, as epoch-<epoch>.pt:
    the same file, copied atomically, so a crash never leaves half of one."""
    source, path = out_dir / CHECKPOINTS / LAST, out_dir / CHECKPOINTS / f"epoch-{epoch}.pt"
    with source.open("rb") as handle:
        atomic_write(path, lambda h: shutil.copyfileobj(handle, h), then=RESUME)
    return path


def kept_checkpoints(out_dir: Path) -> dict[int, Path]:
    """Epoch -> the checkpoint kept at its end, in epoch order ({} if none was kept)."""
    found = {int(m.group(1)): path for path in (out_dir / CHECKPOINTS).glob("epoch-*.pt")
             if (m := KEPT.fullmatch(path.name))}
    return dict(sorted(found.items()))


def load_checkpoint(out_dir: Path) -> dict[str, Any] | None:
    """The last checkpoint, or None when the run has none; a damaged one is never deleted."""
    path = out_dir / CHECKPOINTS / LAST
    if not path.exists():
        return None
    return read_checkpoint(path, "move it away to restart the run from scratch, or use another "
                                 "--out")


def read_checkpoint(path: Path, advice: str) -> dict[str, Any]:
    """The checkpoint at ``path``; a damaged one is a CheckpointError ending in ``advice``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(exc).__name__}); "
                              f"{advice}.") from None


def read_summary(out_dir: Path) -> dict[str, Any]:
    """The summary.json of a finished run."""
    return json.loads((out_dir / "summary.json").read_text())
