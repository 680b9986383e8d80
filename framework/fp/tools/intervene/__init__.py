"""``fp intervene``: the paper's claims (ii) and (iii) as paired interventions on shared
checkpoints (docs/interventions.md). No retraining: every measure prunes its own copy of the same
dense model, kept at the end of a chosen epoch (``experiment.keep_epochs``), and is measured on
the same images.

For each dense run directory, each kept checkpoint epoch and each measure: score the model on
the class-balanced scoring set S at the measure's own temperature, choose the lowest ``fraction``
of the dense filters as a run does, and on the evaluation set V (disjoint from S; ``samples``)
record the loss before, after zeroing the chosen filters and after removing them, the
first-order predictions of both (``effects``), Θᵀg before and after, ||g_S||² over the surviving
parameters before and after at the measure's and the training temperature (``predictions``),
and how much of the first two convolutions went. One JSON line per (run, seed, epoch, measure,
fraction) in ``interventions.jsonl`` (``records``); lines already there are not measured again.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from fp import device as devices
from fp.errors import ConfigError
from fp.manager import Manager, make_manager
from fp.tools.intervene import records, samples
from fp.tools.intervene.point import Checkpoint, measure_record
from fp.tools.intervene.runs import DenseRun, chosen_epochs, open_run

#: images in V for a run whose data.eval_samples is 0 (capped by the data): the paper's 20 x 128
DEFAULT_EVAL_SAMPLES = 2560


@dataclass
class Request:
    """What one ``fp intervene`` call asks of every run."""

    measures: list[str]
    fraction: float
    out_dir: Path
    epochs: tuple[int, ...] | None   # None: every kept one
    eval_samples: int                # V's size for a run with data.eval_samples = 0
    device: str | None               # None: each run's experiment.device


def intervene(run_dirs: Sequence[str | Path], measures: str | Sequence[str], fraction: float,
              out_dir: str | Path, *, epochs: str | Sequence[int] | None = None,
              eval_samples: int = DEFAULT_EVAL_SAMPLES, device: str | None = None,
              manager: Manager | None = None) -> list[dict[str, Any]]:
    """Measure every (run, kept epoch, measure) not yet in ``out_dir/interventions.jsonl``;
    returns the records asked for (these runs, epochs, measures and ``fraction``), old and new.
    ``measures`` and ``epochs`` may be comma-separated strings (epochs None: every kept one);
    ``device`` None means each run's own ``experiment.device``."""
    request = Request(names_of(measures), fraction, Path(out_dir), epochs_of(epochs),
                      eval_samples, device)
    if not 0 < fraction < 1:
        raise ConfigError(f"--fraction {fraction:g} must lie strictly between 0 and 1: the share "
                          f"of the dense filters each measure removes.")
    if eval_samples < 1:
        raise ConfigError(f"--eval-samples {eval_samples} must be at least 1.")
    manager = manager or make_manager()
    for name in request.measures:
        manager.registries["measures"].get(name)  # a misspelt name fails before any work
    paths = [Path(p) for p in run_dirs]
    for path in paths:  # every run directory checked before any is measured
        chosen_epochs(open_run(path, manager), request.epochs)
    done = {records.key_of(r): r for r in records.read_records(request.out_dir)}
    for path in paths:
        measure_run(open_run(path, manager), request, done, manager)  # gin: this run's config
    asked = {p.name for p in paths}
    return [r for r in done.values() if r["run"] in asked and r["fraction"] == fraction
            and r["measure"] in request.measures
            and (request.epochs is None or r["epoch"] in request.epochs)]


def measure_run(run: DenseRun, request: Request, done: dict[tuple, dict],
                manager: Manager) -> None:
    """The records of ``run`` not in ``done``, appended to the file as each is measured."""
    device = devices.resolve(request.device or run.settings.experiment.device)
    dataset = None
    for epoch in chosen_epochs(run, request.epochs):
        todo = [name for name in request.measures
                if records.key_of({"run": run.name, "seed": run.settings.experiment.seed,
                                   "epoch": epoch, "measure": name,
                                   "fraction": request.fraction}) not in done]
        if not todo:
            continue
        dataset = dataset or run.dataset(manager)
        point = checkpoint(run, epoch, dataset, request.eval_samples, device, manager)
        for name in todo:
            measure = manager.registries["measures"].build(name)
            record = measure_record(point, measure, request.fraction)
            records.append_record(request.out_dir, record)
            done[records.key_of(record)] = record


def checkpoint(run: DenseRun, epoch: int, dataset, eval_samples: int, device: torch.device,
               manager: Manager) -> Checkpoint:
    """The checkpoint of ``epoch`` with its V (``data.eval_samples``, else ``eval_samples``,
    capped by the data) and S, and the dense passes every measure shares."""
    held = samples.evaluation_set(dataset, run.settings, eval_samples, device)
    s = samples.scoring_batches(held, run.settings, epoch, device)
    example = torch.zeros(1, dataset.in_channels, *dataset.image_size, device=device)
    return Checkpoint.measured(run, epoch, run.model(epoch, manager, device), held.batches, s,
                               example)


def names_of(measures: str | Sequence[str]) -> list[str]:
    """Measure names from a comma-separated string or a list, in order, once each."""
    items = measures.split(",") if isinstance(measures, str) else list(measures)
    names = list(dict.fromkeys(item.strip() for item in items if item.strip()))
    if not names:
        raise ConfigError("--measures names no measure; give comma-separated registered names "
                          "(`fp list measures` shows them).")
    return names


def epochs_of(epochs: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """Checkpoint epochs from a comma-separated string or a list (None: every kept one)."""
    if epochs is None:
        return None
    items = epochs.split(",") if isinstance(epochs, str) else list(epochs)
    try:
        found = tuple(int(str(item).strip()) for item in items if str(item).strip())
    except ValueError:
        found = ()
    if not found or min(found) < 1:
        raise ConfigError(f"--epochs {epochs!r} must be comma-separated epoch numbers from 1, "
                          f"e.g. 1,2,5.")
    return found


__all__ = ["DEFAULT_EVAL_SAMPLES", "intervene"]
