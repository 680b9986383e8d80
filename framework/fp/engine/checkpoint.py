"""The checkpoint format: what ``checkpoints/last.pt`` holds so that a run continues exactly (bit
for bit) where it stopped, and how it is restored.

A checkpoint is one dict of plain data (read back with ``weights_only=True``):

- ``version``: ``VERSION``, checked before anything is restored: a checkpoint of another version
  is refused in one sentence naming both versions, and left as it is;
- ``model``: the model as ``fp.pruning.model_state`` saves it: architecture, pruned shapes,
  weights, and its masks (weight masks, residual filter masks);
- ``optimizer``: the optimizer's state dict;
- ``epoch``, ``step``, ``event_index``: epochs, optimizer steps and prune events done;
- ``progress``: how far the epoch under way got (batches, samples, loss and correct sums), so a
  resumed epoch skips what was done and ends with the same metrics;
- ``elapsed``, ``best``, ``last_metrics``: the clock, the best test accuracy, the last epoch's
  metrics;
- ``plugins``: ``run.state`` but the keys that start with "_" (plugin state, the latency batch);
- ``rewind``: a rewinding schedule's (IMP's) rewind point, ``Rewind``;
- ``rng``: the Python, NumPy, torch (and CUDA) generators: every visible CUDA device's state and
  the index of the run's device (``rng_state``), restored onto the devices that exist on resume
  (``set_rng_state``);
- ``metrics_bytes``: the length of metrics.jsonl, which a resume truncates back to.

The files themselves (``last.pt`` written atomically, the ``epoch-N.pt`` copies that
``experiment.keep_epochs`` keeps) are ``fp.engine.rundir``'s.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fp import pruning
from fp.engine import optim, rundir
from fp.engine.loop import EpochProgress
from fp.errors import CheckpointError
from fp.run import Run

if TYPE_CHECKING:  # pragma: no cover
    from fp.engine.build import Setup

#: the format this flowprune writes and reads; bump it whenever the dict above changes
VERSION = 2


@dataclass
class Rewind:
    """A rewinding schedule's rewind point (``imp.rewind_epoch``): the weights after ``epoch``
    epochs of the first cycle, which a rewinding prune step puts back into the surviving weights,
    and the epoch the current learning-rate cycle started at (a rewind restarts the schedule)."""

    epoch: int | None = None                      # None: the run never rewinds
    weights: dict[str, torch.Tensor] | None = None  # taken once ``epoch`` epochs are done
    cycle_start: int = 0

    def take(self, model: torch.nn.Module, epoch: int) -> None:
        """Keep ``model``'s weights if the rewind point is reached and none are kept yet."""
        if self.epoch is not None and self.weights is None and epoch >= self.epoch:
            self.weights = {n: p.detach().clone() for n, p in model.named_parameters()}

    def reset(self, model: torch.nn.Module) -> None:
        """Put the kept weights back into ``model``."""
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(self.weights[name].to(p.device))

    def state(self) -> dict[str, Any]:
        return {"weights": self.weights, "cycle_start": self.cycle_start}

    def load(self, state: dict[str, Any]) -> None:
        self.weights, self.cycle_start = state["weights"], state["cycle_start"]


def save(s: "Setup", run: Run) -> None:
    """Write ``last.pt`` (rank 0), and keep a copy at the end of an epoch that
    ``experiment.keep_epochs`` names."""
    if run.is_main:
        rundir.save_checkpoint(run.out_dir, state(s, run))
        at_epoch_end = s.progress.batches == 0  # not a prune event's or a stop's mid-epoch save
        if at_epoch_end and run.epoch in s.settings.experiment.keep_epochs:
            rundir.keep_checkpoint(run.out_dir, run.epoch)


def state(s: "Setup", run: Run) -> dict[str, Any]:
    """The checkpoint of the run ``s`` built, as it stands (the module docstring lists it)."""
    progress = s.progress
    return {
        "version": VERSION,
        "model": pruning.model_state(run.model),
        "optimizer": run.optimizer.state_dict(),
        "epoch": run.epoch, "step": run.step, "event_index": s.event_index,
        "progress": {"batches": progress.batches, "seen": progress.seen,
                     "loss_sum": float(progress.loss_sum), "correct": int(progress.correct)},
        "elapsed": s.elapsed, "best": s.best, "last_metrics": s.last_metrics,
        "plugins": {k: v for k, v in run.state.items() if not k.startswith("_")},
        "rewind": s.rewind.state(),
        "rng": rng_state(run.device), "metrics_bytes": s.metrics_log.size(),
    }


def load(out_dir: Path) -> dict[str, Any] | None:
    """The run's last checkpoint, upgraded from an older version this flowprune knows and its
    version checked; None when it has none."""
    ckpt = rundir.load_checkpoint(out_dir)
    if ckpt is not None:
        ckpt = upgraded(ckpt)
        check_version(ckpt, out_dir / rundir.CHECKPOINTS / rundir.LAST)
    return ckpt


def load_on_ranks(out_dir: Path, rank: int, world_size: int) -> dict[str, Any] | None:
    """``load`` as rank 0 decides it for all ranks of a distributed run: rank 0 reads the
    checkpoint (or finds none, or refuses it) and tells the others, which read the same file only
    when rank 0 resumes, before any rank goes on (so before rank 0 writes its own step-0
    checkpoint, which a rank looking by itself could take for one to resume from)."""
    if world_size == 1:
        return load(out_dir)
    import torch.distributed as dist

    ckpt, decision = None, [False, None]
    if rank == 0:
        try:
            ckpt = load(out_dir)
            decision = [ckpt is not None, None]
        except CheckpointError as exc:
            decision = [False, str(exc)]
    dist.broadcast_object_list(decision, src=0)
    resume, failure = decision
    if failure is not None:
        raise CheckpointError(failure)
    if resume and rank != 0:
        ckpt = load(out_dir)
    dist.barrier()  # every rank holds its checkpoint (or none) before rank 0 writes one
    return ckpt


def upgraded(ckpt: Any) -> Any:
    """A version-1 checkpoint in the version-2 layout, so a run interrupted under version 1
    resumes exactly. Version 1 kept the weight masks beside the model (``masks``) and the rewind
    point among the plugin state (``plugins["rewind"]``, ``plugins["cycle_start"]``); version 2
    keeps the masks inside ``model`` and the rewind point as ``rewind``. The file is not
    rewritten: the next save writes version 2."""
    if not isinstance(ckpt, dict) or ckpt.get("version") != 1:
        return ckpt
    ckpt = dict(ckpt)
    plugins = dict(ckpt.get("plugins", {}))
    model = dict(ckpt["model"])
    masks = ckpt.pop("masks", None) or {}
    if masks:
        model["masks"] = {name: mask.bool() for name, mask in masks.items()}
    ckpt["model"] = model
    ckpt["rewind"] = {"weights": plugins.pop("rewind", None), "cycle_start": plugins.pop("cycle_start", 0)}
    ckpt["plugins"] = plugins
    ckpt["version"] = 2
    return ckpt


def check_version(ckpt: Any, path: Path) -> None:
    """Refuse a checkpoint this flowprune does not read, in one sentence, touching nothing."""
    found = ckpt.get("version") if isinstance(ckpt, dict) else None
    if found != VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {found}, and this "
                              f"flowprune reads version {VERSION}; resume it with the flowprune "
                              f"that wrote it, or move it away to restart the run from scratch.")


def restore(s: "Setup", run: Run, ckpt: dict[str, Any]) -> None:
    """Continue the run ``s`` built from ``ckpt`` (its version checked by ``load``)."""
    # each tensor in its saved layout (channels-last stays so), on this run's device
    run.model = pruning.model_from_state(ckpt["model"]).to(run.device)
    run.masks = {k: v.to(run.device) for k, v in run.masks.items()}  # they came on the CPU
    run.optimizer = optim.make_optimizer(run.model, s.settings.train)
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.epoch, run.step = ckpt["epoch"], ckpt["step"]
    s.progress = EpochProgress(**ckpt["progress"])
    s.event_index, s.elapsed, s.best = ckpt["event_index"], ckpt["elapsed"], ckpt["best"]
    s.last_metrics = ckpt["last_metrics"]
    # plugin state comes back on the CPU (or saved from another device): onto the model's
    run.state.update(on_device(ckpt["plugins"], run.device))
    s.rewind.load(ckpt["rewind"])
    set_rng_state(ckpt["rng"], run.device)
    if run.is_main:  # the one writer of metrics.jsonl; another rank's truncation could race it
        s.metrics_log.truncate(ckpt["metrics_bytes"])
    run.resumed = True
    where = f"epoch {run.epoch}" + (f", batch {s.progress.batches} of epoch {run.epoch + 1}"
                                    if s.progress.batches else "")
    s.notes.append(f"resumed from the checkpoint after {where} (step {run.step})")


def on_device(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor in it (through dicts, lists and tuples) moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: on_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(on_device(v, device) for v in value)
    return value


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """The generators' states: Python's, NumPy's, torch's CPU one and, where CUDA is available,
    every visible device's with the index of ``device`` (the run's) among them."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(internal), gauss], "torch": torch.get_rng_state(),
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
        state["cuda_device"] = _cuda_index(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore ``rng_state``'s generators; CUDA states onto the devices that exist now
    (``cuda_states``), so a run saved on more GPUs than are visible resumes."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        for index, saved in cuda_states(state["cuda"], state.get("cuda_device"),
                                        torch.cuda.device_count(), _cuda_index(device)):
            torch.cuda.set_rng_state(saved, index)


def cuda_states(saved: list, saved_device: int | None, visible: int,
                device: int | None) -> list[tuple[int, Any]]:
    """(device index, state) pairs to restore of ``saved`` (one state per device visible when
    the checkpoint was written, the run's being ``saved_device``) on a machine with ``visible``
    devices, the run's now being ``device``: the run's device gets the state of the device the
    run used (whatever their indices), and every other visible device the saved state of its
    index where there is one. Devices the checkpoint knew and this machine lacks are dropped; a
    device it did not know keeps its seed."""
    pairs = {i: saved[i] for i in range(min(len(saved), visible))}
    if device is not None and saved_device is not None and 0 <= saved_device < len(saved) \
            and 0 <= device < visible:
        pairs[device] = saved[saved_device]
    return sorted(pairs.items())


def _cuda_index(device: torch.device | None) -> int | None:
    """The CUDA index a run on ``device`` uses (None for a CPU run)."""
    if device is None or device.type != "cuda":
        return None
    return device.index if device.index is not None else torch.cuda.current_device()
