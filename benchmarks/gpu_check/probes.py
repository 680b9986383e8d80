"""The GPU check's probes besides training: the data archive, the experiment as ``fp run`` builds
it, data on the device, a one-process NCCL group, and one prune event of each paper measure, its
scores computed again with TF32 allowed (``rankings``). They use fp's public API only (the ``fp``
facade, ``fp.run``, ``fp.nn``, ``fp.device``, ``fp.hookspecs``)."""
from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

import fp
from fp.device import free_memory
from fp.hookspecs import hookimpl
from fp.nn import FILTER

from . import rankings
from .monitor import MB, clock, error_text

if TYPE_CHECKING:  # pragma: no cover
    from fp.run import Run

#: the paper's measures (Lubana & Dick, ICLR 2021), timed one prune event each
PAPER_MEASURES = ("magnitude", "snip", "taylor", "biased_snip", "grasp", "grad_norm")
#: the share of the free memory that kept first-order graphs may use when prune.hvp_memory_gb is
#: None: half, as fp.ScoreContext documents it
HVP_SHARE = 0.5


def unpack(archive: Path, into: Path, per_class: int | None = None) -> dict[str, Any]:
    """Unpack a ``{train,test}/<class>/<image>`` archive into ``into`` (all of it, or the first
    ``per_class`` training and a quarter as many test images of each class) and find its root."""
    with tarfile.open(archive, "r:*") as tar:
        members = tar if per_class is None else first_of_each_class(tar, per_class)
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(into, members=members, **safe)
    candidates = [into, *sorted(p for p in into.iterdir() if p.is_dir())]
    root = next((c for c in candidates if (c / "train").is_dir() and (c / "test").is_dir()), None)
    if root is None:
        raise ValueError(f"{archive} holds no train/ and test/ folders (expected "
                         f"{{train,test}}/<class>/<image>).")
    images = {split: sum(1 for f in (root / split).rglob("*") if f.is_file())
              for split in ("train", "test")}
    return {"root": str(root), "images": images,
            "classes": len([d for d in (root / "train").iterdir() if d.is_dir()])}


def first_of_each_class(tar: tarfile.TarFile, per_class: int):
    """The archive's files, at most ``per_class`` per training class (a quarter of that, at
    least one, per test class); read in one pass over the stream."""
    limit = {"train": per_class, "test": max(1, per_class // 4)}
    taken: dict[tuple[str, ...], int] = {}
    for member in tar:
        parts = Path(member.name).parts
        split = next((p for p in parts if p in limit), None)
        if not member.isfile() or split is None:
            continue
        folder = parts[:-1]
        if taken.get(folder, 0) < limit[split]:
            taken[folder] = taken.get(folder, 0) + 1
            yield member


class Built(Exception):
    """Raised from ``run_start`` to stop a run as soon as it is built."""


class BuiltRun:
    """A plugin that keeps the Run that ``run_start`` receives and stops the run there."""

    __name__ = "gpu_check_built_run"

    def __init__(self) -> None:
        self.run: Run | None = None

    @hookimpl(tryfirst=True)
    def run_start(self, run: Run) -> None:
        self.run = run
        raise Built("built; stopped before the first training step")


def built_run(files: Sequence[str], bindings: Sequence[str], out: Path) -> Run:
    """The experiment as ``fp run`` builds it in ``out`` (model, data, loaders, measure,
    optimizer), taken from its ``run_start`` hook and stopped there: dense and untrained."""
    keep = BuiltRun()
    try:
        fp.run_experiment(files, bindings, out=out, quiet=True,
                          manager=fp.make_manager(plugins=(keep,)))
    except Exception:  # the manager names the plugin that stopped it: ours, once it has the run
        if keep.run is None:
            raise
    if keep.run is None:
        raise RuntimeError(f"the experiment in {out} ended without starting a run.")
    return keep.run


def on_device(run: Run) -> dict[str, Any]:
    """Where a training batch arrives, and where the in-memory path holds the uint8 images."""
    data = run.dataset
    x, y = next(iter(run.train_loader))
    found = {"device": str(run.device), "dataset": data.name,
             "batch": {"device": str(x.device), "dtype": str(x.dtype), "shape": list(x.shape)},
             "labels_device": str(y.device)}
    same = x.device.type == y.device.type == run.device.type
    if getattr(data, "in_memory", False):
        held = data.on_device("train", run.device).images
        found["held"] = {"device": str(held.device), "dtype": str(held.dtype),
                         "mb": round(held.numel() * held.element_size() / MB, 1)}
        same = same and held.device.type == run.device.type and held.dtype == torch.uint8
    else:
        found["held"] = {"skipped": f"{data.name} streams from disk (not held in memory)"}
    if hasattr(data, "cache_hit"):
        found["decoded_cache_hit"] = data.cache_hit
    return {"ok": bool(same), **found}


#: a one-process group: join it, all_reduce a tensor on the device, leave it
GROUP_CHECK = """
import datetime, json, os, sys, tempfile, time
import torch, torch.distributed as dist
backend, device = sys.argv[1], sys.argv[2]
store = os.path.join(tempfile.mkdtemp(prefix="fp-gpu-check-"), "store")
start = time.perf_counter()
dist.init_process_group(backend, init_method="file://" + store, rank=0, world_size=1,
                        timeout=datetime.timedelta(seconds=60))
x = torch.full((1 << 20,), 2.0, device=device)
dist.all_reduce(x)
value = x[0].item()
dist.destroy_process_group()
found = {"backend": backend, "device": str(x.device), "all_reduce_value": value,
         "seconds": round(time.perf_counter() - start, 3)}
if backend == "nccl":
    version = torch.cuda.nccl.version()  # a tuple in recent torch, an int in older ones
    found["nccl_version"] = ".".join(map(str, version)) if isinstance(version, tuple) else version
print(json.dumps(found))
"""


def process_group(backend: str, device: torch.device, timeout: float = 90) -> dict[str, Any]:
    """GROUP_CHECK in a fresh process, so a hung collective costs ``timeout`` and no more."""
    done = subprocess.run([sys.executable, "-c", GROUP_CHECK, backend, str(device)],
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the {backend} process group failed (exit {done.returncode}): {last}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return {"ok": found["all_reduce_value"] == 2.0, **found}  # the sum over a world of one


def prune_events(run: Run, measures=PAPER_MEASURES, deadline: float = math.inf) -> dict[str, Any]:
    """One prune event of each measure on the run's dense model, as the engine runs one: draw the
    first event's scoring batches (``Run.scoring_batches``), score through a fresh ScoreContext
    with the run's ``prune.*`` settings, then remove the protocol's first round from a copy of
    the model with ``fp.prune`` on those scores. Clocks read after a CUDA synchronisation. Then,
    untimed, the same batches scored with TF32 allowed and the decisions compared
    (``rankings``), for every measure whose event ends before ``deadline`` (a perf_counter
    time; the comparison is skipped after it, the events never)."""
    prune = run.settings.prune
    device = run.device
    plan = first_rounds(run)
    first_round = plan[0].target if plan else 0.05
    example = torch.zeros(1, run.dataset.in_channels, *run.dataset.image_size, device=device)
    free = free_memory(device)
    found: dict[str, Any] = {
        "samples": prune.samples, "batch_size": prune.batch_size, "architecture":
        run.settings.model.architecture, "surgery_target": round(first_round, 4),
        "free_memory_mb": round(free / MB, 1), "hvp_memory_gb": prune.hvp_memory_gb,
        "hvp_budget_mb": round((prune.hvp_memory_gb * 2 ** 30 if prune.hvp_memory_gb is not None
                                else HVP_SHARE * free) / MB, 1),
        "hvp_budget_rule": ("prune.hvp_memory_gb" if prune.hvp_memory_gb is not None else
                            f"{HVP_SHARE:g} x the free {device.type} memory at the event"),
        "tf32_compared_at": f"the protocol's first event: {first_round:.4f} of the filters removed",
        "measures": {}}
    one_event(run, "snip", first_round, example, batches=1)  # untimed: one-off kernel selection
    for name in measures:
        try:
            found["measures"][name] = {"ok": True, **one_event(run, name, first_round, example,
                                                               deadline=deadline)}
        except Exception as exc:  # noqa: BLE001 - one measure failing must not hide the others
            found["measures"][name] = {"ok": False, "error": error_text(exc)}
    found["ok"] = all(m["ok"] for m in found["measures"].values())
    return found


def first_rounds(run: Run) -> list:
    """The run's prune plan (``fp.schedule.PruneStep``s) as its schedule plans it for the run."""
    prune, train = run.settings.prune, run.settings.train
    if not prune.target > 0:
        return []
    schedule = run.manager.registries["schedules"].build(prune.schedule)
    return schedule.plan(prune.target, prune.rounds, train.epochs, len(run.train_loader))


class GivenScores(fp.Measure):
    """A measure that returns scores computed before: ``fp.prune`` then only cuts."""

    name = "given_scores"
    needs_data = uses_grad = uses_grad_sq = False

    def __init__(self, scores: dict[str, torch.Tensor]):
        self.scores = scores

    def filter_scores(self, ctx) -> dict[str, torch.Tensor]:
        return self.scores


def balanced_draw(run: Run, measure: fp.Measure) -> bool | None:
    """Whether the event draws class-balanced samples for ``measure`` (``prune.balanced``, None:
    the measure's own); None for a data-free measure, which gets one example."""
    if not measure.needs_data:
        return None
    chosen = run.settings.prune.balanced
    return measure.balanced if chosen is None else chosen


def one_event(run: Run, name: str, target: float, example: torch.Tensor,
              batches: int | None = None, deadline: float = -math.inf) -> dict[str, Any]:
    """One timed prune event of measure ``name`` (see ``prune_events``); before ``deadline``, its
    TF32 comparison too."""
    device = run.device
    run.measure = measure = run.manager.registries["measures"].build(name)
    start = clock(device)
    drawn = run.scoring_batches(1)
    drawn = drawn[:batches] if batches else drawn
    drawn_at = clock(device)
    free = free_memory(device)
    ctx = score_context(run, measure, drawn, tf32=False)
    scores = fp.score(None, measure, None, granularity=FILTER, temperature=ctx.temperature,
                      ctx=ctx)
    scored_at = clock(device)
    model = copy.deepcopy(run.model)
    rankings.tag_filters(model, list(scores))  # the weights say which filters survive
    cut_at = clock(device)
    surgery(run, model, scores, target, example)
    end = clock(device)
    found = {"draw_s": round(drawn_at - start, 4), "score_s": round(scored_at - drawn_at, 4),
             "surgery_s": round(end - cut_at, 4),
             "event_s": round(end - cut_at + scored_at - start, 4),
             "samples": sum(len(y) for _, y in drawn), "balanced": balanced_draw(run, measure),
             "free_memory_mb": round(free / MB, 1), **ctx.info}
    if time.perf_counter() < deadline:
        found["tf32"] = tf32_ranking(run, measure, drawn, scores,
                                     rankings.kept_filters(model, list(scores)), target, example)
    elif deadline > -math.inf:
        found["tf32"] = {"skipped": "the scoring part's budget ran out"}
    return found


def score_context(run: Run, measure: fp.Measure, drawn: list, tf32: bool) -> fp.ScoreContext:
    """A fresh ScoreContext as a prune event of ``run`` makes one, TF32 allowed or not."""
    prune, seed = run.settings.prune, run.settings.experiment.seed
    ctx = fp.ScoreContext(run.model, drawn, device=run.device, temperature=(
        measure.temperature if prune.temperature is None else prune.temperature),
        hvp_method=prune.hvp_method, hvp_memory_gb=prune.hvp_memory_gb,
        layout=prune.scoring_layout, shortcuts=prune.scoring_shortcuts, seed=seed, tf32=tf32)
    ctx.info["scoring_seed"] = seed
    return ctx


def surgery(run: Run, model: torch.nn.Module, scores: dict[str, torch.Tensor], target: float,
            example: torch.Tensor) -> None:
    """``fp.prune`` of ``model`` on given ``scores`` with the run's ``prune.*`` options."""
    prune = run.settings.prune
    fp.prune(model, GivenScores(scores), (), target, example_inputs=example,
             target_type=prune.target_type, max_fraction=prune.max_fraction,
             protected=tuple(prune.protected), round_to=prune.round_to, residual=prune.residual)


def tf32_ranking(run: Run, measure: fp.Measure, drawn: list, scores: dict[str, torch.Tensor],
                 kept: dict[str, set[int]], target: float, example: torch.Tensor) -> dict[str, Any]:
    """The event's batches scored again with TF32 allowed, its decisions taken on a tagged copy,
    and both compared with the full-fp32 ones (``rankings.compare``)."""
    start = clock(run.device)
    ctx = score_context(run, measure, drawn, tf32=True)
    tf32 = fp.score(None, measure, None, granularity=FILTER, temperature=ctx.temperature, ctx=ctx)
    scored_at = clock(run.device)
    model = copy.deepcopy(run.model)
    rankings.tag_filters(model, list(tf32))
    surgery(run, model, tf32, target, example)
    return {**rankings.compare(scores, tf32, kept, rankings.kept_filters(model, list(tf32))),
            "score_s": round(scored_at - start, 4)}
