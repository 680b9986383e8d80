"""Errors a user can cause. The CLI prints them as one sentence and exits non-zero."""
from __future__ import annotations

import difflib
from typing import Iterable


class FpError(Exception):
    """A mistake in the user's input (config, names, data, files), not a bug in fp.

    The message is one sentence that names the culprit; the CLI prints it without a traceback
    and exits with ``exit_code``.
    """

    exit_code = 2


class ConfigError(FpError):
    """A gin file, binding or configured value that cannot be used."""


class RegistryError(FpError):
    """An unknown or duplicate measure, architecture, dataset or schedule name."""


class PluginError(FpError):
    """A third-party plugin that failed to load or raised inside a hook."""


class PruningError(FpError):
    """A model the dependency analysis cannot trace, or a target that cannot be met."""


class CheckpointError(FpError):
    """A corrupt, truncated or incompatible checkpoint or run directory."""


class BusyError(FpError):
    """A run directory that another process is writing at this moment."""


class DataError(FpError):
    """A dataset that is missing, empty or malformed."""


class Interrupted(FpError):
    """SIGINT or SIGTERM arrived; a checkpoint was written and the run can be resumed."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
