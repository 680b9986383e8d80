"""The GPU check's probes besides training: the data archive, data on the device, a one-process
NCCL group, and one prune event of each paper measure."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import torch

from fp import pruning
from fp.engine.prune_event import draw_scoring, filter_options, scoring_context
from fp.engine.checkpoint import Setup
from fp.nn import FILTER
from fp.scoring import score
from fp.scoring.hvp.choice import MEMORY_SHARE, clock, free_memory
from fp.tools.bench.gpu_monitor import MB, error_text

#: the paper's measures (Lubana & Dick, ICLR 2021), timed one prune event each
PAPER_MEASURES = ("magnitude", "snip", "taylor", "biased_snip", "grasp", "grad_norm")


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


def on_device(setup: Setup) -> dict[str, Any]:
    """Where a training batch arrives, and where the in-memory path holds the uint8 images."""
    run = setup.run
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


def prune_events(setup: Setup, measures=PAPER_MEASURES) -> dict[str, Any]:
    """One prune event of each measure on the setup's dense model, as the engine runs one: draw
    the scoring batches, score through a fresh ScoreContext, then remove the protocol's first
    round on a copy of the model. Clocks read after a CUDA synchronisation."""
    run, prune = setup.run, setup.settings.prune
    device = run.device
    first_round = setup.plan[0].target if setup.plan else 0.05
    free = free_memory(device)
    found: dict[str, Any] = {
        "samples": prune.samples, "batch_size": prune.batch_size, "architecture":
        setup.settings.model.architecture, "surgery_target": round(first_round, 4),
        "free_memory_mb": round(free / MB, 1), "hvp_memory_gb": prune.hvp_memory_gb,
        "hvp_budget_mb": round((prune.hvp_memory_gb * 2 ** 30 if prune.hvp_memory_gb is not None
                                else MEMORY_SHARE * free) / MB, 1),
        "hvp_budget_rule": ("prune.hvp_memory_gb" if prune.hvp_memory_gb is not None else
                            f"{MEMORY_SHARE:g} x the free {device.type} memory at the event"),
        "measures": {}}
    one_event(setup, "snip", first_round, batches=1)  # untimed: one-off kernel selection
    for name in measures:
        try:
            found["measures"][name] = {"ok": True, **one_event(setup, name, first_round)}
        except Exception as exc:  # noqa: BLE001 - one measure failing must not hide the others
            found["measures"][name] = {"ok": False, "error": error_text(exc)}
    found["ok"] = all(m["ok"] for m in found["measures"].values())
    return found


def one_event(setup: Setup, name: str, target: float, batches: int | None = None) -> dict:
    run = setup.run
    device = run.device
    run.measure = measure = run.manager.registries["measures"].build(name)
    start = clock(device)
    drawn, how = draw_scoring(run, 1)
    drawn = drawn[:batches] if batches else drawn
    drawn_at = clock(device)
    free = free_memory(device)
    ctx = scoring_context(run, drawn, 1)
    scores = score(None, measure, None, granularity=FILTER, temperature=ctx.temperature, ctx=ctx)
    scored_at = clock(device)
    model = copy.deepcopy(run.model)
    cut_at = clock(device)
    pruning.prune_filters(model, scores, target, example_inputs=setup.example_inputs,
                          dense=run.dense, **filter_options(run))
    end = clock(device)
    return {"draw_s": round(drawn_at - start, 4), "score_s": round(scored_at - drawn_at, 4),
            "surgery_s": round(end - cut_at, 4),
            "event_s": round(end - cut_at + scored_at - start, 4),
            "samples": sum(len(y) for _, y in drawn), "balanced": how.get("scoring_balanced"),
            "free_memory_mb": round(free / MB, 1), **ctx.info}
