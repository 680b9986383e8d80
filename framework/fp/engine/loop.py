"""The training loop: one epoch of training (and the forward it runs the model through: DDP,
torch.compile) and one evaluation pass. Hooks and prune events are the only ways in."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from fp.nn import tempered_loss
from fp.run import Run

if TYPE_CHECKING:  # pragma: no cover
    from fp.engine.compiler import Compiler


def autocast(run: Run):
    """bf16 autocast when ``experiment.amp`` is on (works on CPU and CUDA), else nothing."""
    if not run.settings.experiment.amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=run.device.type, dtype=torch.bfloat16)


def _inputs(run: Run, x: torch.Tensor) -> torch.Tensor:
    if run.settings.experiment.channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


@dataclass
class EpochProgress:
    """How far the current epoch got: batches done and the running sums behind its metrics.
    Saved in mid-epoch checkpoints so a resumed epoch skips what was done and ends identically."""

    batches: int = 0
    seen: int = 0
    loss_sum: torch.Tensor | float = 0.0  # a device tensor while training (no per-step sync)
    correct: torch.Tensor | int = 0


def make_forward(run: Run, compiler: "Compiler | None" = None) -> Callable:
    """The callable a training step runs the model through: the model itself, DDP-wrapped on
    more than one rank, compiled afresh by ``compiler`` (``experiment.compile``). Made again after
    every surgery."""
    model = run.model
    if run.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model)
    return compiler.compile(model) if compiler is not None else model


def train_epoch(run: Run, forward: Callable, on_step: Callable[[], None],
                progress: EpochProgress) -> dict[str, float]:
    """Train for one pass over ``run.train_loader``, skipping the ``progress.batches`` already
    done; ``on_step`` runs after every optimizer step (masks, hooks, due prune events, stop
    requests). Returns train loss and accuracy (non-finite when the loss diverged)."""
    temperature = run.settings.train.temperature
    run.model.train()
    progress.loss_sum = torch.as_tensor(progress.loss_sum, dtype=torch.float32, device=run.device)
    progress.correct = torch.as_tensor(progress.correct, dtype=torch.long, device=run.device)
    for index, (x, y) in enumerate(run.train_loader):
        if index < progress.batches:
            continue  # done before the checkpoint this epoch resumed from
        with autocast(run):
            logits = forward(_inputs(run, x))
        loss = tempered_loss(logits.float(), y, temperature)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        run.step += 1
        progress.loss_sum += loss.detach() * y.numel()
        progress.correct += (logits.detach().argmax(1) == y).sum()
        progress.batches, progress.seen = index + 1, progress.seen + y.numel()
        run.manager.call("after_step", run=run, step=run.step, loss=loss.detach())
        on_step()
    totals = _all_reduce(run, torch.stack([progress.loss_sum, progress.correct.float(),
                                           torch.tensor(float(progress.seen), device=run.device)]))
    return {"train_loss": (totals[0] / totals[2]).item(), "train_acc": (totals[1] / totals[2]).item()}


@torch.no_grad()
def evaluate_split(run: Run, model: torch.nn.Module | None = None, loader=None) -> dict[str, float]:
    """Test loss (at the training temperature) and accuracy over the whole test split."""
    model = model if model is not None else run.model
    loader = loader if loader is not None else run.test_loader
    temperature = run.settings.train.temperature
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=run.device)
    correct = torch.zeros((), device=run.device)
    seen = torch.zeros((), device=run.device)
    for x, y in loader:
        with autocast(run):
            logits = model(_inputs(run, x)).float()
        loss_sum += tempered_loss(logits, y, temperature, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        seen += y.numel()
    model.train(was_training)
    totals = _all_reduce(run, torch.stack([loss_sum, correct, seen]))
    return {"test_loss": (totals[0] / totals[2]).item(), "test_acc": (totals[1] / totals[2]).item()}


def _all_reduce(run: Run, totals: torch.Tensor) -> torch.Tensor:
    """Sum per-rank totals so every rank reports the numbers of the whole split."""
    if run.world_size > 1:
        import torch.distributed as dist

        dist.all_reduce(totals)
    return totals
