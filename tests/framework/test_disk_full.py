"""A full disk, a spent quota or a folder that cannot be written: one sentence naming the file and
the cause, exit 2, the temporary file removed, the file that was there intact, and for a run
directory the advice to run the same command again, which resumes.

Most tests make the file system refuse on purpose (``os.write`` or ``os.fsync`` failing for the
temporary files of one folder, as a disk does when it fills); where this machine lets the tests
mount a small tmpfs, others fill a real one, and one runs the installed ``fp`` into it.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

import fp
from fp.atomic import atomic_write
from fp.cli import main
from fp.engine import rundir
from fp.engine.runlock import LOCK_FILE, RunLock
from fp.errors import PluginError, StorageError
from fp.pruning import build_model

REPO = Path(__file__).parents[2]
FP = Path(sys.executable).with_name("fp")
TINY = ["--bind", "train.epochs=1", "--bind", "prune.rounds=1", "--bind", "digits.size=8",
        "--bind", "prune.samples=64", "--bind", "flow.enabled=False"]
RESUME = "run the same command again to resume"
CAUSE = {errno.ENOSPC: "no space left", errno.EDQUOT: "quota", errno.EACCES: "permission denied",
         errno.EPERM: "not permitted", errno.EROFS: "read-only"}


class Disk:
    """Makes the file system refuse writes to some files of one folder, as a full disk does:
    a file takes ``room`` more bytes (the last write short), then every write raises."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch

    def fills(self, folder: Path, code: int = errno.ENOSPC, room: int = 0,
              pattern: str = ".*.tmp") -> None:
        real = os.write
        written: dict[int, int] = {}  # inode -> bytes taken

        def write(fd: int, data) -> int:
            inode = self._inode(fd, folder, pattern)
            if inode is None:
                return real(fd, data)
            left = room - written.get(inode, 0)
            if left <= 0:
                raise OSError(code, os.strerror(code))
            count = real(fd, bytes(memoryview(data)[:left]))
            written[inode] = written.get(inode, 0) + count
            return count

        self.monkeypatch.setattr(os, "write", write)

    def refuses_fsync(self, folder: Path, code: int) -> None:
        """What NFS or a quota on XFS do: every write is taken, the fsync reports the failure."""
        real = os.fsync

        def fsync(fd: int) -> None:
            if self._inode(fd, folder, ".*.tmp") is not None:
                raise OSError(code, os.strerror(code))
            real(fd)

        self.monkeypatch.setattr(os, "fsync", fsync)

    def refuses_new_files(self, code: int) -> None:
        """A folder the user may not write, or on a read-only file system."""
        def mkstemp(*args, dir=None, **kwargs):
            raise OSError(code, os.strerror(code), str(dir))

        self.monkeypatch.setattr(tempfile, "mkstemp", mkstemp)

    @staticmethod
    def _inode(fd: int, folder: Path, pattern: str) -> int | None:
        """The inode of the file ``fd`` writes if it is one of ``folder``'s that match."""
        try:
            inode = os.fstat(fd).st_ino
        except OSError:
            return None
        found = any(p.stat().st_ino == inode for p in folder.rglob(pattern) if p.is_file())
        return inode if found else None


@pytest.fixture
def disk(monkeypatch) -> Disk:
    return Disk(monkeypatch)


def assert_refused(exc: StorageError, path: Path, code: int, *needles: str) -> None:
    message = str(exc)
    assert exc.exit_code == 2 and exc.errno == code and exc.path == path
    assert len(message.splitlines()) == 1 and message.endswith(".")
    assert f"cannot write {path} (" in message and CAUSE[code] in message, message
    for needle in needles:
        assert needle in message, (needle, message)


def temp_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.tmp"))


def checkpoint_state(width: int) -> dict:
    return {"weights": torch.arange(width, dtype=torch.float32), "epoch": 3}


# --- atomic_write: every run-directory file, checkpoint and saved model -------------------------

@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS])
@pytest.mark.parametrize("room", [0, 3000])  # the disk full at once, or after part of the file
def test_torch_save_into_a_full_disk_is_a_storage_error_and_keeps_the_old_file(tmp_path, disk, code,
                                                                               room):
    path = tmp_path / "last.pt"
    atomic_write(path, lambda h: torch.save(checkpoint_state(100), h))
    before = path.read_bytes()
    disk.fills(tmp_path, code, room=room)
    # torch's zip writer ends a failed write with its own RuntimeError, which has no errno
    with pytest.raises(StorageError) as caught:
        atomic_write(path, lambda h: torch.save(checkpoint_state(100_000), h))
    assert_refused(caught.value, path, code, "write it again", "intact")
    assert path.read_bytes() == before and temp_files(tmp_path) == []
    assert torch.load(path, weights_only=True)["weights"].numel() == 100


def test_an_error_without_errno_over_a_refused_write_is_still_the_refusal(tmp_path, disk):
    """What torch's zip writer does, whatever torch version runs: the file system's OSError is
    replaced by an exception of the writer's own that names no cause."""
    def write(handle):
        try:
            handle.write(b"x" * 100_000)
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos") from None

    disk.fills(tmp_path, errno.ENOSPC, room=10)
    with pytest.raises(StorageError) as caught:
        atomic_write(tmp_path / "file.bin", write)
    assert_refused(caught.value, tmp_path / "file.bin", errno.ENOSPC)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_disk_that_reports_the_failure_at_fsync(tmp_path, disk, code):
    path = tmp_path / "summary.json"
    path.write_text("{}")
    disk.refuses_fsync(tmp_path, code)
    with pytest.raises(StorageError) as caught:
        atomic_write(path, lambda h: h.write(b'{"test_acc": 1}'))
    assert_refused(caught.value, path, code)
    assert path.read_text() == "{}" and temp_files(tmp_path) == []


@pytest.mark.parametrize("code", [errno.EACCES, errno.EPERM, errno.EROFS])
def test_a_folder_that_cannot_take_a_new_file(tmp_path, disk, code):
    path = tmp_path / "model.pt"
    disk.refuses_new_files(code)
    with pytest.raises(StorageError) as caught:
        atomic_write(path, lambda h: h.write(b"data"))
    assert_refused(caught.value, path, code, f"make {tmp_path} writable")
    assert not path.exists()


def test_other_failures_are_not_storage_errors(tmp_path, disk):
    path = tmp_path / "file"
    disk.fills(tmp_path, errno.EIO)  # a failing device is not the user's to fix: a traceback
    with pytest.raises(OSError) as caught:
        atomic_write(path, lambda h: h.write(b"x" * 100_000))
    assert not isinstance(caught.value, StorageError) and caught.value.errno == errno.EIO
    with pytest.raises(ValueError):  # an error of the writer itself goes on as it is
        atomic_write(path, lambda h: int("not a number"))
    assert list(tmp_path.iterdir()) == []


def test_an_unrefused_write_is_unchanged(tmp_path):
    """The handle is an ordinary buffered binary file: torch.save, seeks and copies work, and
    the bytes are the ones torch writes into any file."""
    state = checkpoint_state(1000)
    atomic_write(tmp_path / "a.pt", lambda h: torch.save(state, h))
    with open(tmp_path / "b.pt", "wb") as handle:
        torch.save(state, handle)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()

    def seeking(handle):
        handle.write(b"abcdef")
        handle.seek(2)
        handle.write(b"XY")
        handle.seek(0, os.SEEK_END)
        handle.write(b"!")

    atomic_write(tmp_path / "c", seeking)
    assert (tmp_path / "c").read_bytes() == b"abXYef!"
    assert temp_files(tmp_path) == []


def test_fp_save_says_to_save_the_model_again(tmp_path, disk):
    model = build_model("small_cnn", num_classes=10, in_channels=1)
    disk.fills(tmp_path, room=5000)
    with pytest.raises(StorageError) as caught:
        fp.save(model, tmp_path / "model.pt")
    assert_refused(caught.value, tmp_path / "model.pt", errno.ENOSPC, "save the model again")
    assert list(tmp_path.iterdir()) == []


# --- the run directory ---------------------------------------------------------------------------

def test_every_run_directory_file_says_the_same_command_resumes(tmp_path, disk):
    rundir.save_checkpoint(tmp_path, checkpoint_state(100))
    kept = rundir.keep_checkpoint(tmp_path, 1)
    rundir.write_json(tmp_path / "summary.json", {"test_acc": 0.5})
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    disk.fills(tmp_path, room=100)
    writes = {tmp_path / "checkpoints" / "last.pt":
              lambda: rundir.save_checkpoint(tmp_path, checkpoint_state(50_000)),
              tmp_path / "checkpoints" / "epoch-2.pt": lambda: rundir.keep_checkpoint(tmp_path, 2),
              tmp_path / "summary.json": lambda: rundir.write_json(tmp_path / "summary.json",
                                                                   {"notes": "n" * 10_000}),
              tmp_path / "operative_config.gin": lambda: rundir.write_text(
                  tmp_path / "operative_config.gin", "# config\n" * 2000)}
    for path, write in writes.items():
        with pytest.raises(StorageError) as caught:
            write()
        assert_refused(caught.value, path, errno.ENOSPC, RESUME, "last checkpoint is intact")
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert kept.exists() and temp_files(tmp_path) == []


class PartWriting:
    """An appending handle on a disk that takes ``room`` more characters, then refuses."""

    def __init__(self, handle, room: int) -> None:
        self.handle, self.room = handle, room

    def write(self, text: str) -> int:
        self.handle.write(text[:self.room])
        self.handle.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()


def test_a_metrics_line_the_disk_cut_short_is_removed(tmp_path, monkeypatch):
    log = rundir.MetricsLog(tmp_path / "metrics.jsonl")
    log({"event": "epoch", "epoch": 1})
    before = log.path.read_bytes()
    real_open = Path.open
    monkeypatch.setattr(Path, "open", lambda self, mode="r", *args, **kwargs: (
        PartWriting(real_open(self, mode, *args, **kwargs), room=7) if self == log.path
        and "a" in mode else real_open(self, mode, *args, **kwargs)))
    with pytest.raises(StorageError) as caught:
        log({"event": "epoch", "epoch": 2})
    assert_refused(caught.value, log.path, errno.ENOSPC, RESUME)
    assert log.path.read_bytes() == before  # one whole object a line, as before
    assert [json.loads(line) for line in log.path.read_text().splitlines()] == [
        {"event": "epoch", "epoch": 1}]


def test_a_run_lock_the_full_disk_cannot_write_is_released(tmp_path, disk):
    disk.fills(tmp_path, pattern=LOCK_FILE)
    with pytest.raises(StorageError) as caught:
        RunLock(tmp_path).acquire()
    assert_refused(caught.value, tmp_path / LOCK_FILE, errno.ENOSPC, RESUME)
    disk.monkeypatch.undo()
    with RunLock(tmp_path):  # the failed attempt holds nothing
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())


def test_a_run_lock_in_a_folder_that_cannot_be_written(tmp_path, monkeypatch):
    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path / "r"))

    monkeypatch.setattr(Path, "mkdir", refused)
    with pytest.raises(StorageError) as caught:
        RunLock(tmp_path / "r").acquire()
    assert_refused(caught.value, tmp_path / "r" / LOCK_FILE, errno.EACCES, RESUME)


def test_while_the_run_holds_its_lock_any_refused_write_there_says_resume(tmp_path, disk):
    model = build_model("small_cnn", num_classes=10, in_channels=1)
    disk.fills(tmp_path, room=5000)
    with pytest.raises(StorageError) as caught, RunLock(tmp_path):
        fp.save(model, tmp_path / "model.pt")  # the run's final model, through fp.save
    assert_refused(caught.value, tmp_path / "model.pt", errno.ENOSPC, RESUME)
    # a plugin writing a file of its own with plain open(), perhaps inside a hook
    plain = OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), str(tmp_path / "plugin.log"))
    in_hook = PluginError("plugin 'x' failed in hook after_epoch: OSError: [Errno 122] ...")
    in_hook.__cause__ = plain
    for raised in (plain, in_hook):
        with pytest.raises(StorageError) as caught, RunLock(tmp_path):
            raise raised
        assert_refused(caught.value, tmp_path / "plugin.log", errno.EDQUOT, RESUME)
    # a plugin's own StorageError, which the plugin manager wraps to name the plugin
    wrapped = PluginError("plugin 'x' failed in hook after_epoch: StorageError: ...")
    wrapped.__cause__ = StorageError.writing(tmp_path / "events.out", errno.ENOSPC, "write again")
    with pytest.raises(StorageError) as caught, RunLock(tmp_path):
        raise wrapped
    assert_refused(caught.value, tmp_path / "events.out", errno.ENOSPC, RESUME)
    # a file outside the run directory is not the run's to resume: left as it is
    elsewhere = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path.parent / "cache"))
    with pytest.raises(OSError) as caught, RunLock(tmp_path):
        raise elsewhere
    assert caught.value is elsewhere


@pytest.fixture
def in_repo(monkeypatch):
    monkeypatch.setenv("FP_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.chdir(REPO)


def test_fp_run_on_a_full_disk_is_one_sentence_and_exit_2(tmp_path, disk, capsys, in_repo):
    out = tmp_path / "run"
    disk.fills(out.parent, pattern=".last.pt.*.tmp")  # the first checkpoint, before training
    with pytest.raises(SystemExit) as exited:
        main(["run", "gin/quickstart.gin", *TINY, "--out", str(out)])
    err = capsys.readouterr().err
    assert exited.value.code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    text = " ".join(err.split())
    assert text.startswith(f"error: cannot write {out / 'checkpoints' / 'last.pt'}")
    assert "no space left on the device" in text and RESUME in text
    assert temp_files(out) == [] and (out / "config.gin").exists()


# --- real file systems, where this machine lets the tests mount them ----------------------------

class Tmpfs:
    """A tmpfs of ``size_kib`` mounted on ``folder``; ``resize`` changes its size in place."""

    def __init__(self, folder: Path, size_kib: int) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs",
                                 str(folder)], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"a small file system is mounted for this test, and mount failed here "
                        f"(it needs root with mount privileges): {result.stderr.strip()}")

    def remount(self, *options: str) -> None:
        subprocess.run(["mount", "-o", ",".join(("remount", *options)), str(self.folder)],
                       check=True, capture_output=True)

    def unmount(self) -> None:
        if subprocess.run(["umount", str(self.folder)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(self.folder)], capture_output=True)


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(size_kib)``: a small real file system under tmp_path (the test skips where none
    can be mounted), unmounted afterwards."""
    mounted: list[Tmpfs] = []

    def mount(size_kib: int) -> Tmpfs:
        mounted.append(Tmpfs(tmp_path / f"fs{len(mounted)}", size_kib))
        return mounted[-1]

    if shutil.which("mount") is None:
        pytest.skip("no mount command on this machine")
    yield mount
    for fs in mounted:
        fs.unmount()


def test_torch_save_on_a_really_full_disk(tmpfs):
    fs = tmpfs(64)  # KiB
    path = fs.folder / "last.pt"
    atomic_write(path, lambda h: torch.save(checkpoint_state(5_000), h))  # ~20 KiB
    before = path.read_bytes()
    with pytest.raises(StorageError) as caught:
        atomic_write(path, lambda h: torch.save(checkpoint_state(15_000), h))  # ~60 KiB more
    assert_refused(caught.value, path, errno.ENOSPC)
    assert path.read_bytes() == before and temp_files(fs.folder) == []


def test_a_really_read_only_file_system(tmpfs):
    fs = tmpfs(64)  # KiB
    (fs.folder / "run").mkdir()
    rundir.write_json(fs.folder / "run" / "summary.json", {"test_acc": 0.5})
    fs.remount("ro")
    with pytest.raises(StorageError) as caught:
        rundir.write_json(fs.folder / "run" / "summary.json", {"test_acc": 0.9})
    assert_refused(caught.value, fs.folder / "run" / "summary.json", errno.EROFS, RESUME)
    with pytest.raises(StorageError) as caught:
        RunLock(fs.folder / "run").acquire()
    assert_refused(caught.value, fs.folder / "run" / LOCK_FILE, errno.EROFS, RESUME)
    assert json.loads((fs.folder / "run" / "summary.json").read_text()) == {"test_acc": 0.5}


def test_a_really_full_disk_refuses_the_run_lock_and_a_metrics_line(tmpfs):
    fs = tmpfs(16)  # KiB
    log = rundir.MetricsLog(fs.folder / "metrics.jsonl")
    log({"event": "epoch", "epoch": 1})
    filler = fs.folder / "filler"
    with pytest.raises(OSError), filler.open("wb") as handle:
        handle.write(b"x" * 64 * 1024)
    before = log.path.read_bytes()
    with pytest.raises(StorageError) as caught:
        log({"event": "epoch", "epoch": 2, "notes": "n" * 8192})
    assert_refused(caught.value, log.path, errno.ENOSPC, RESUME)
    assert log.path.read_bytes() == before
    with pytest.raises(StorageError) as caught:
        RunLock(fs.folder / "run").acquire()
    assert_refused(caught.value, fs.folder / "run" / LOCK_FILE, errno.ENOSPC, RESUME)


def fp_script(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FP_DISABLE_PLUGIN_AUTOLOAD": "1", "COLUMNS": "250"}
    env.pop("FP_DEBUG", None)
    return subprocess.run([str(FP), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)


@pytest.mark.slow
@pytest.mark.skipif(not FP.exists(), reason=f"no installed fp console script at {FP}")
def test_the_quickstart_on_a_full_disk_stops_in_one_sentence_and_resumes_to_the_same_numbers(
        tmp_path, tmpfs):
    # TensorBoard's event writer is a thread of its own that could race the checkpoint for the
    # last bytes; the run directory's own files are what this test fills the disk with
    args = ["run", "gin/quickstart.gin", *TINY, "--bind", "tensorboard.enabled=False"]
    whole = fp_script(*args, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    expected = json.loads((tmp_path / "whole" / "summary.json").read_text())
    # room for the first checkpoint (the dense model's 4 bytes a weight, no optimizer state yet)
    # and the small files, a quarter more in all, but not for the next checkpoint beside it
    fs = tmpfs(round(expected["dense_params"] * 4 * 1.25 / 1024))  # KiB
    out = fs.folder / "run"
    stopped = fp_script(*args, "--out", str(out))
    assert stopped.returncode == 2, (stopped.stdout, stopped.stderr)
    lines = [line for line in stopped.stderr.splitlines()  # but the progress lines
             if line.strip() and not line.startswith("step ")]
    assert len(lines) == 1 and "Traceback" not in stopped.stderr + stopped.stdout, stopped.stderr
    assert lines[0].startswith(f"error: cannot write {out}") and "no space left" in lines[0]
    assert RESUME in lines[0]
    assert temp_files(out) == [] and (out / "checkpoints" / "last.pt").exists()
    fs.remount(f"size={16 * 1024}k")  # space freed
    resumed = fp_script(*args, "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from the checkpoint" in resumed.stdout
    summary = json.loads((out / "summary.json").read_text())
    for key in ("test_acc", "best_test_acc", "params", "filters_kept", "flops", "epochs", "steps"):
        assert summary[key] == expected[key], key


def test_written_files_get_the_mode_the_umask_gives(tmp_path):
    """Not mkstemp's 0600: a colleague on a shared cluster can read a run's files."""
    previous = os.umask(0o027)
    try:
        atomic_write(tmp_path / "a.json", lambda h: h.write(b"{}"))
    finally:
        os.umask(previous)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
    assert os.umask(previous) == previous  # the umask was put back


def test_a_full_disk_under_tensorboards_writer_is_one_sentence_that_resumes(tmp_path, monkeypatch,
                                                                             capfd):
    """TensorBoard writes its event file from a thread of its own; a refused write there ends the
    run with the StorageError naming the event file and the resume advice, and the thread
    prints no traceback."""
    from tensorboard.summary.writer import record_writer

    def full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(record_writer.RecordWriter, "write", full)
    binds = ["train.epochs = 1", "prune.rounds = 1", "digits.size = 8", "prune.samples = 64",
             "flow.enabled = False"]
    with pytest.raises(StorageError) as caught:
        fp.run_experiment(["gin/quickstart.gin"], binds, out=tmp_path / "r", quiet=True)
    message = str(caught.value)
    assert "events.out.tfevents" in message and str(tmp_path / "r") in message
    assert "no space" in message and "run the same command again to resume" in message
    assert "Traceback" not in capfd.readouterr().err
    assert (tmp_path / "r" / "checkpoints" / "last.pt").exists()
