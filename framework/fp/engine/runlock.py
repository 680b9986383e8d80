"""One writer per run directory: an exclusive OS lock held while a process writes it.

The lock is ``flock`` on ``<run>/run.lock``. The kernel drops it when its holder exits for any
reason (SIGKILL included), so a killed run never blocks its own resume; the file itself stays
and only names the process that last held it.
"""
from __future__ import annotations

import os
from pathlib import Path

from fp.errors import BusyError, ConfigError

LOCK_FILE = "run.lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no OS lock is available
    fcntl = None


class RunLock:
    """``with RunLock(run_dir):`` holds the directory's lock or raises BusyError at once."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        try:
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
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            if fcntl is not None:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_free(run_dir: str | os.PathLike) -> None:
    """Raise BusyError now if another process holds ``run_dir``'s lock (a launcher's early
    check; the writing process takes the lock itself). Never creates anything."""
    if (Path(run_dir) / LOCK_FILE).exists():
        RunLock(run_dir).acquire().release()
