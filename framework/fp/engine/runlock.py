"""One writer per run directory: an exclusive OS lock held while a process writes it.

The lock is ``flock`` on ``<run>/run.lock``. The kernel drops it when its holder exits for any
reason (SIGKILL included), so a killed run never blocks its own resume; the file itself stays
and only names the process that last held it.

The lock spans every write of the run, so it is also where a write into the directory that the
file system refused for lack of space or permission gets its advice: whoever wrote the file
(``fp.engine.rundir``, ``fp.save`` for model.pt, a plugin with plain ``open``), the run ends in a
``StorageError`` that names the file and says the same command resumes (``RESUME``). A lock that
cannot be taken for those reasons says so in the same words.
"""
from __future__ import annotations

import os
from pathlib import Path

from fp.atomic import as_storage_error
from fp.errors import BusyError, ConfigError, PluginError, StorageError

LOCK_FILE = "run.lock"
#: what to do about a run directory that could not be written, once space or permission is back
RESUME = "run the same command again to resume (the last checkpoint is intact)"

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no OS lock is available
    fcntl = None


class RunLock:
    """``with RunLock(run_dir):`` holds the directory's lock or raises BusyError at once
    (StorageError where the lock file cannot be written)."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        try:
            with as_storage_error(self.path, RESUME):
                self.run_dir.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"run directory {self.run_dir} cannot be created or written "
                              f"({exc.strerror}).") from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise BusyError(f"run directory {self.run_dir} is being written by process "
                                f"{holder}; wait for it to finish, or stop it, before running "
                                f"it again.") from None
        self.fd = fd
        try:
            with as_storage_error(self.path, RESUME):  # a full disk can refuse even these few bytes
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        if self.fd is not None:
            if fcntl is not None:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, kind, exc, traceback) -> None:
        self.release()
        failure = self.storage_failure(exc)
        if failure is not None and str(failure) != str(exc):
            raise failure from exc

    def storage_failure(self, exc: BaseException | None) -> StorageError | None:
        """The StorageError, advising a resume, for ``exc`` if it is a write into this run
        directory refused for lack of space or permission: a StorageError, or a plain OSError
        (perhaps inside a PluginError) naming a file here; None for anything else."""
        found = exc.__cause__ if isinstance(exc, PluginError) else exc
        if isinstance(found, StorageError) and found.path is not None and found.errno is not None:
            path, code = found.path, found.errno
        elif isinstance(found, OSError) and found.errno in StorageError.CAUSES and found.filename:
            path, code = Path(os.fsdecode(found.filename)), found.errno
        else:
            return None
        if self.run_dir.resolve() not in path.resolve().parents:
            return None
        return StorageError.writing(path, code, RESUME)


def check_free(run_dir: str | os.PathLike) -> None:
    """Raise BusyError now if another process holds ``run_dir``'s lock (a launcher's early
    check; the writing process takes the lock itself). Never creates anything."""
    if (Path(run_dir) / LOCK_FILE).exists():
        RunLock(run_dir).acquire().release()
