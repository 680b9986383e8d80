"""TensorBoard logging of every run, on by default: ``tensorboard --logdir RUN_OR_SWEEP_DIR``.

The event files go straight into the run directory, so a sweep directory shows one TensorBoard
run per experiment. Every scalar is plotted against the global optimizer step (epoch-level values
at the step that ends their epoch), so per-step, per-epoch and per-prune curves share one axis.

Tags, by section:
  train/   loss, acc, lr per epoch; batch_loss every ``log_every`` steps
  test/    loss, acc, best_acc per epoch
  model/   params, flops, filters_kept and their ``_frac`` of the dense model, per epoch
  prune/   target (and sparsity at weight granularity) per event; score histograms per layer
           (``prune/scores/<layer>``) and over all layers (``prune/scores/all``)
  layer/   ``layer/<layer>/width``: output channels kept after each prune event
  config/  the operative gin config (text), at the start
  flow/    the gradient-flow diagnostics (``fp_builtins.flow``), and any plugin's ``log_scalars``
At the start, a Custom Scalars layout (``layout``: the gradient-flow quantities read against each
other, one chart each) and an hparams summary (``hparams``: the train/prune/data/model settings,
and any key a sweep into the run's folder varies, against test/acc, test/best_acc,
model/params_frac and model/flops_frac); at the end, the hparams session's end.

Settings (gin): ``tensorboard.enabled``, ``tensorboard.histograms`` (score histograms at prune
events), ``tensorboard.log_every`` (steps between batch-loss points, 0 = none). Only rank 0 writes.
"""
from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Iterator

import gin
import torch

import fp
from fp.errors import ConfigError, StorageError
from fp.run import layer_tag
from fp_builtins.tensorboard.hparams import write_hparams_end, write_hparams_start
from fp_builtins.tensorboard.layout import write_layout
from fp_builtins.tensorboard.tags import EPOCH_TAGS

if TYPE_CHECKING:  # pragma: no cover
    from torch.utils.tensorboard import SummaryWriter

#: run.state key of the open writer; the leading underscore keeps it out of checkpoints
STATE_KEY = "_tensorboard"


@gin.configurable("tensorboard")
def tensorboard(enabled: bool = True, histograms: bool = True,
                log_every: Annotated[int, fp.Range(ge=1)] = 50) -> dict[str, Any]:
    """TensorBoard settings: write event files at all, write prune-score histograms, and the
    number of optimizer steps between two batch-loss points (0 = per-epoch values only)."""
    if int(log_every) != log_every or log_every < 0:
        raise ConfigError(f"tensorboard.log_every = {log_every!r} must be a whole number of steps, "
                          f"at least 0 (0 = no per-step batch loss).")
    return {"enabled": bool(enabled), "histograms": bool(histograms), "log_every": int(log_every)}


def writer_for(run) -> "SummaryWriter | None":
    """The run's SummaryWriter (opened on first use), for plugins that log into the same event
    file; None on ranks other than 0, when ``tensorboard.enabled = False``, when this plugin is
    blocked, and after the run ended."""
    board = _board(run)
    return board["writer"] if board else None


def _board(run) -> dict[str, Any] | None:
    if STATE_KEY not in run.state:
        run.state[STATE_KEY] = _open(run)
    return run.state[STATE_KEY]


def _open(run) -> dict[str, Any] | None:
    if not run.is_main or not run.manager.is_registered(sys.modules[__name__]):
        return None
    settings = tensorboard()
    if not settings["enabled"]:
        return None
    from torch.utils.tensorboard import SummaryWriter

    # A resume replays from its checkpoint, which is saved after the epoch-end logging at
    # run.step: TensorBoard keeps what an earlier process logged below purge_step, drops the rest.
    purge_step = run.step + 1 if run.resumed else None
    if threading.excepthook is _PREVIOUS_EXCEPTHOOK:
        threading.excepthook = _quiet_writer_thread
    writer = SummaryWriter(log_dir=str(run.out_dir), purge_step=purge_step)
    return {"settings": settings, "writer": writer}


@contextlib.contextmanager
def refused_writes_named(run) -> Iterator[None]:
    """A write the file system refuses for lack of space or permission (the event file's, or
    the writer opening it) becomes a StorageError naming the event file; the run then says how
    it resumes. TensorBoard writes from a thread of its own, which reports the error to the next
    call here: that thread's own traceback is not printed (``_quiet_writer_thread``)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in StorageError.CAUSES:
            raise
        raise StorageError.writing(_event_file(run), exc.errno, "log it again") from exc


def _event_file(run) -> Path:
    """The run's event file (its folder where the writer has none yet)."""
    board = run.state.get(STATE_KEY)
    writer = board["writer"] if board else None
    try:
        return Path(writer._get_file_writer().event_writer._file_name)
    except AttributeError:  # not opened yet, or another TensorBoard's writer layout
        return Path(run.out_dir) / "events.out.tfevents"


def _quiet_writer_thread(args) -> None:
    """threading.excepthook: TensorBoard's writer thread's refused write is reported once, by
    the hook that next writes (``refused_writes_named``), not as a traceback of its own."""
    exc = args.exc_value
    if (type(args.thread).__name__ == "_AsyncWriterThread" and isinstance(exc, OSError)
            and exc.errno in StorageError.CAUSES):
        return
    _PREVIOUS_EXCEPTHOOK(args)


_PREVIOUS_EXCEPTHOOK = threading.excepthook


@fp.hookimpl(trylast=True)  # last, so the other plugins' settings are in the operative config
def run_start(run) -> None:
    with refused_writes_named(run):
        writer = writer_for(run)
        if writer is None:
            return
        # fenced, so TensorBoard's markdown keeps the gin file's line breaks and '#' comments
        writer.add_text("config/operative", f"```\n{fp.operative_config()}\n```", run.step)
        write_layout(writer)
        from fp.tools.sweep.record import folder_grid  # here: `fp list` does not load the sweep

        write_hparams_start(writer, run.config, folder_grid(run.out_dir), run.step)
        # TensorBoard lists the run, and its HParams row, before its first epoch ends
        writer.flush()


@fp.hookimpl
def log_scalars(run, scalars: dict[str, float], step: int) -> None:
    with refused_writes_named(run):
        writer = writer_for(run)
        if writer is None:
            return
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, step)


@fp.hookimpl
def after_step(run, step: int, loss: torch.Tensor) -> None:
    with refused_writes_named(run):
        board = _board(run)
        if board is None:
            return
        every = board["settings"]["log_every"]
        if every and step % every == 0:
            # item() syncs: rarely
            board["writer"].add_scalar("train/batch_loss", loss.item(), step)


@fp.hookimpl
def after_prune(run, event) -> None:
    with refused_writes_named(run):
        board = _board(run)
        if board is None:
            return
        writer = board["writer"]
        writer.add_scalar("prune/target", event.target, event.step)
        if event.sparsity is not None:
            writer.add_scalar("prune/sparsity", event.sparsity, event.step)
        for name, width in event.widths_after.items():
            writer.add_scalar(layer_tag(name, "width"), width, event.step)
        if board["settings"]["histograms"]:
            write_score_histograms(writer, event.scores, event.step)


def write_score_histograms(writer: "SummaryWriter", scores: dict[str, torch.Tensor],
                           step: int) -> None:
    """One histogram per layer and one of every score together (the global ranking's view)."""
    finite = {name: values.detach().float().flatten().cpu() for name, values in scores.items()}
    finite = {name: v[torch.isfinite(v)] for name, v in finite.items()}
    finite = {name: v for name, v in finite.items() if v.numel()}  # an empty histogram is an error
    for name, values in finite.items():
        writer.add_histogram(f"prune/scores/{name.removesuffix('.weight')}", values, step)
    if finite:
        writer.add_histogram("prune/scores/all", torch.cat(list(finite.values())), step)


@fp.hookimpl(trylast=True)  # after other plugins logged this epoch, so the flush includes them
def after_epoch(run, epoch: int, metrics: dict[str, float]) -> None:
    with refused_writes_named(run):
        writer = writer_for(run)
        if writer is None:
            return
        for key, tag in EPOCH_TAGS.items():
            if metrics.get(key) is not None:
                writer.add_scalar(tag, metrics[key], run.step)
        writer.flush()


@fp.hookimpl(trylast=True)
def run_end(run, summary: dict[str, Any]) -> None:
    with refused_writes_named(run):
        writer = writer_for(run)
        if writer is None:
            return
        write_hparams_end(writer, run.step)
        writer.close()
        run.state[STATE_KEY] = None  # closed: later calls get None instead of reopening a file
