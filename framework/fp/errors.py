"""Errors a user can cause. The CLI prints them as one sentence and exits non-zero."""
from __future__ import annotations

import difflib
import errno
import os
from pathlib import Path
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


class StorageError(FpError):
    """A file that cannot be written for lack of space (a full disk, a spent quota) or of
    permission (a read-only file system, a folder that is not the user's). Where ``fp.atomic``
    wrote it, the temporary file is removed and whatever the path held before is intact.

    ``StorageError.writing(path, code, then)`` names the file and the cause (``CAUSES[code]``)
    and ends in what to do: free space or make the folder writable, and ``then`` (for a run
    directory, run the same command again to resume). ``path`` and ``errno`` are kept, so a
    caller that knows better what the file belongs to can say it again with its own ``then``.
    """

    #: errno -> the cause, as the sentence names it; any other OSError is not a StorageError
    CAUSES = {
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EACCES: "permission denied",
        errno.EPERM: "the operation is not permitted",
        errno.EROFS: "the file system is read-only",
    }
    #: the causes that freeing space cures (the others need a writable folder)
    SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})

    def __init__(self, message: str, path: str | os.PathLike | None = None,
                 errno: int | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else Path(path)
        self.errno = errno

    @classmethod
    def writing(cls, path: str | os.PathLike, code: int, then: str) -> "StorageError":
        """The error for ``path``, which the file system refused with errno ``code`` (a key
        of ``CAUSES``); ``then`` is what to do once the cause is gone."""
        path = Path(path)
        remedy = ("free some space" if code in cls.SPACE
                  else f"make {path.parent} writable")
        return cls(f"cannot write {path} ({cls.CAUSES[code]}); {remedy} and {then}.", path, code)


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
