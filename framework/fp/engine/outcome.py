"""What a finished ``fp run`` hands back to its caller."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Outcome:
    """What ``fp run`` reports: the summary, and whether it resumed or found the run finished."""

    out_dir: Path
    summary: dict[str, Any]
    resumed: bool = False
    already_finished: bool = False
    notes: list[str] = field(default_factory=list)
    model: Any = None  # the final (pruned) model, for callers in the same process
