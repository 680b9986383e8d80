"""The engine behind ``fp run``, in one folder:

- ``experiment``: the entry (``run_experiment``): parse, refuse or find a finished run, lock, build;
- ``build``: settings -> a live experiment (``Setup``);
- ``setup``: the built experiment and the checkpoint format (what is saved, how it is restored);
- ``trainer``: epochs, prune events at their steps, checkpoints, hooks, stopping on signals;
- ``loop``: one training epoch and one evaluation pass;
- ``prune_event``: score, the ``score`` hook, surgery or masks, the optimizer rebuilt;
- ``optim``: the optimizer factory and learning-rate schedules;
- ``rundir`` / ``runlock``: the run directory's files and its single-writer lock;
- ``progress``: the progress lines; ``distributed`` / ``launch``: torch.distributed helpers and
  the ``--nproc`` / torchrun launcher.
"""
from __future__ import annotations

import importlib

_LAZY = {"run_experiment": "fp.engine.experiment", "Outcome": "fp.engine.outcome"}


def __getattr__(name: str):
    """``fp.engine.run_experiment`` and ``fp.engine.Outcome``, imported on first use so that a
    tool reading only run directories (``fp.engine.rundir``) does not build the whole engine."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fp.engine' has no attribute {name!r}")


__all__ = ["Outcome", "run_experiment"]
