"""The engine behind ``fp run``, in one folder, one module per concept:

- ``experiment``: the entry (``run_experiment``): parse, refuse or find a finished run, lock, build;
- ``build``: settings -> a live experiment (``Setup``: the model, data, plan, the ``Run`` plugins
  see, and the bookkeeping its checkpoint carries), fresh or from its last checkpoint;
- ``trainer``: epochs, prune events at their steps, checkpoints, hooks, stopping on signals;
- ``loop``: one training epoch (and the DDP / compiled forward it runs) and one evaluation pass;
- ``prune_event``: a prune event inside a run: its scoring samples, the hooks, rank 0's latency
  choice shared, the record, the optimizer rebuilt around ``fp.pruning.prune_event`` (the code
  ``fp.prune`` runs too);
- ``checkpoint``: the checkpoint format (what ``last.pt`` holds, its ``VERSION`` checked on
  resume, IMP's ``Rewind`` point, the RNG state) and how a run is restored from it;
- ``summary``: the contents of summary.json and the model-size statistics the records share;
- ``optim``: the optimizer factory and learning-rate schedules;
- ``rundir`` / ``runlock``: the run directory's files and its single-writer lock;
- ``progress``: the progress lines; ``distributed`` / ``launch``: torch.distributed helpers and
  the ``--nproc`` / torchrun launcher; ``outcome``: what ``fp run`` hands back.
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
