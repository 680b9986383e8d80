"""Which exact shortcuts a scoring computation takes: the decision, as the layers read it.

Two shortcuts compute the same function and gradients as torch's own layers, rounded
differently: a convolution's weight gradient as one matrix product (``conv.Geometry``), and an
eval-mode BatchNorm that alone consumes a convolution's output folded into its weight (``fold``).
Which is faster depends on the shapes and the machine, so ``fp.scoring.shortcut_choice`` decides
them, by the mode: "off" (none), "on" (every one that applies) or "auto" (timed).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from fp.errors import ConfigError

MODES = ("auto", "off", "on")
#: ``ScoreContext``'s mode when none is given (tests set "off", and time only where they mean to)
DEFAULT_MODE = "auto"


@dataclass(frozen=True)
class Shortcuts:
    """The convolutions (qualified names) that take each shortcut in one computation."""

    matmul: frozenset[str] = frozenset()   # weight gradient as one matrix product
    fold: frozenset[str] = frozenset()     # the BatchNorm after it folded into its weight


NONE = Shortcuts()


class ShortcutInfo(TypedDict, total=False):
    """How a computation's shortcuts were decided, as ``ScoreContext.info`` names it."""

    scoring_shortcuts: str                  # the mode
    scoring_matmul: list[str]               # convolutions whose weight gradient is a product
    scoring_fold: list[str]                 # convolutions with their BatchNorm folded in
    scoring_shortcuts_s: float              # seconds spent timing now (0: all known)


def checked_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"scoring shortcuts {mode!r} is not one of {', '.join(MODES)}.")
    return mode
