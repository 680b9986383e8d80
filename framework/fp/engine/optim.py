"""SGD and the learning-rate schedules of the paper's protocol (multistep 80/40/40, or cosine).

The LR is a pure function of the epoch, so nothing needs rebuilding after surgery or a resume.
"""
from __future__ import annotations

import math

import torch

from fp.config.settings import Train


def make_optimizer(model: torch.nn.Module, train: Train) -> torch.optim.SGD:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=train.lr, momentum=train.momentum,
                           weight_decay=train.weight_decay, nesterov=train.nesterov)


def milestone_epochs(train: Train, epochs: int) -> list[int]:
    """Milestones as epoch numbers: floats below 1 are fractions of ``epochs``."""
    return sorted(round(m * epochs) if isinstance(m, float) and m < 1 else int(m)
                  for m in train.milestones)


def lr_at(train: Train, epoch: int, epochs: int) -> float:
    """The learning rate for 0-based ``epoch`` of a cycle of ``epochs`` epochs."""
    if train.lr_schedule == "constant":
        return train.lr
    if train.lr_schedule == "cosine":
        return 0.5 * train.lr * (1.0 + math.cos(math.pi * epoch / epochs))
    passed = sum(epoch >= m for m in milestone_epochs(train, epochs))
    return train.lr * train.gamma ** passed


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def rebuild_optimizer(model: torch.nn.Module, train: Train, old: torch.optim.Optimizer,
                      momentum: dict[int, torch.Tensor] | None) -> torch.optim.SGD:
    """A fresh optimizer for a model whose parameters were replaced by surgery; ``momentum`` maps
    ``id(new_param)`` to its surviving momentum buffer (prune.preserve_momentum)."""
    new = make_optimizer(model, train)
    set_lr(new, old.param_groups[0]["lr"])
    for p in new.param_groups[0]["params"]:
        if momentum and id(p) in momentum:
            new.state[p]["momentum_buffer"] = momentum[id(p)].detach().clone()
    return new
