"""One way to write a file: to a temporary file beside it, flushed and fsynced, then renamed over
it (and the folder fsynced), so a crash leaves the old file or the new one, never half of one.
Run directories, checkpoints and saved models are all written through it.

A write the file system refuses for lack of space or permission (``StorageError.CAUSES``: a full
disk, a spent quota, a read-only file system, a folder that is not the user's) ends in a
``StorageError``: one sentence naming the file and the cause, and the temporary file removed, so a
full disk leaves no ``.tmp`` debris and the file that was there is untouched. Any other failure
propagates as it is.

How the cause is known: the bytes go to the file through ``os.write`` in ``TempFile`` (under an
``io.BufferedWriter``, so the caller still sees an ordinary buffered binary file), which keeps the
first OSError the file system raised. ``torch.save`` needs this: its zip writer calls the
handle's ``write``, and when that raises, ``torch.save`` still finishes the archive on its way
out, which fails in turn with a RuntimeError ("unexpected pos ...") that has no errno and replaces
the OSError. Kept by the file itself, the real errno does not depend on how torch reports the
failure. The alternatives were worse: serialising into a BytesIO first and writing its bytes
afterwards holds the whole file in memory a second time (twice the peak for a large checkpoint);
and asking the disk after a RuntimeError (free space, a probe write) races with other writers,
cannot see a quota, and would call a genuine bug in torch a full disk. The cost is one Python
call per chunk that reaches the file: torch hands over one chunk per tensor, and a file copy one
per 64 KiB, so it is lost in the noise (the same speed and peak memory as a plain file).
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from fp.errors import StorageError

#: what to do once space or permission is back, for a file that stands alone (``fp.save``'s
#: caller says "save the model again"; a run directory's files say how the run resumes)
WRITE_AGAIN = "write it again (any earlier file at that path is intact)"


def atomic_write(path: Path, write: Callable[[BinaryIO], object], *,
                 then: str = WRITE_AGAIN) -> None:
    """Call ``write(handle)`` on a temporary file beside ``path``, fsync it, then rename it.

    A write refused for lack of space or permission raises ``StorageError`` naming ``path``, its
    cause, and ``then``: what to do once the cause is gone; the temporary file is removed."""
    path = Path(path)
    with as_storage_error(path.parent, then):
        path.parent.mkdir(parents=True, exist_ok=True)
    with as_storage_error(path, then):
        temp = TempFile.beside(path)
    try:
        with io.BufferedWriter(temp) as handle:
            write(handle)
            handle.flush()
            temp.sync()
        temp.rename(path)
    except BaseException as exc:
        temp.remove()
        failure = (storage_error(path, temp.error, then)
                   if temp.error and isinstance(exc, Exception) else None)
        if failure is None:
            raise
        raise failure from temp.error
    _fsync_dir(path.parent)


@contextlib.contextmanager
def as_storage_error(path: Path, then: str) -> Iterator[None]:
    """Turn an OSError of lack of space or permission raised inside into the StorageError of
    ``path``; any other OSError goes on as it is."""
    try:
        yield
    except OSError as exc:
        failure = storage_error(path, exc, then)
        if failure is None:
            raise
        raise failure from exc


def storage_error(path: Path, exc: OSError, then: str) -> StorageError | None:
    """The StorageError of ``exc``, raised while writing ``path``, or None when its cause is not
    space or permission (the caller then re-raises ``exc`` itself)."""
    if exc.errno not in StorageError.CAUSES:
        return None
    return StorageError.writing(path, exc.errno, then)


class TempFile(io.RawIOBase):
    """The temporary file ``atomic_write`` writes (under a buffer): every byte goes through
    ``os.write``, and the first OSError the file system raises (writing, fsyncing, renaming) is
    kept as ``error``, whatever the caller turned it into."""

    def __init__(self, fd: int, name: str) -> None:
        super().__init__()
        self.fd, self.name = fd, name
        self.error: OSError | None = None

    @classmethod
    def beside(cls, path: Path) -> "TempFile":
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        # mkstemp creates 0600; the file gets the mode any new file of the user's gets (0644
        # under the usual umask), so colleagues on a shared cluster can read a run's results
        os.fchmod(fd, 0o666 & ~_umask())
        return cls(fd, name)

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd

    def write(self, data) -> int:
        with self._kept():
            return os.write(self.fd, data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return os.lseek(self.fd, offset, whence)

    def tell(self) -> int:
        return os.lseek(self.fd, 0, os.SEEK_CUR)

    def sync(self) -> None:
        """fsync: some file systems (NFS, a quota on XFS) report a full disk only here."""
        with self._kept():
            os.fsync(self.fd)

    def rename(self, path: Path) -> None:
        with self._kept():
            os.replace(self.name, path)

    def close(self) -> None:
        if not self.closed:
            super().close()
            os.close(self.fd)

    def remove(self) -> None:
        """Close and delete the temporary file (after a failure; nothing else to report)."""
        with contextlib.suppress(OSError):
            self.close()
        with contextlib.suppress(OSError):
            os.unlink(self.name)

    @contextlib.contextmanager
    def _kept(self):
        try:
            yield
        except OSError as exc:
            self.error = self.error or exc
            raise


def _umask() -> int:
    """The process's umask (read by setting it and putting it back: there is no other way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
