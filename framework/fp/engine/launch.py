"""Multi-process training through torch.distributed: ``fp run --nproc N`` on one machine, or any
``torchrun`` launch (multi-node included) of ``fp run``. gloo on CPU, NCCL on GPU."""
from __future__ import annotations

import gc
import os
import uuid
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist

from fp import errors
from fp.engine.distributed import record_ranks
from fp.engine.experiment import run_experiment


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def launch(nproc: int, files: Sequence[str], bindings: Sequence[str], out: Path | None,
           device: str | None, force: bool = False) -> dict[int, dict[str, Any]]:
    """Start ``nproc`` local workers with torchrun's machinery and wait for them; returns each
    rank's result (its summary and a digest of its final weights)."""
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0,
                          monitor_interval=0.5)
    return raise_failed(elastic_launch(config, worker)(list(files), list(bindings), out, device,
                                                     force))


def raise_failed(results: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """``results`` of ranks that all finished; a user's mistake a rank met is raised here, in
    the launching process, as the same fp error."""
    failed = [r for r in results.values() if "error" in r]
    if failed:
        raise getattr(errors, failed[0]["error_type"], errors.FpError)(failed[0]["error"])
    return results


def worker(files: list[str], bindings: list[str], out: Path | None, device: str | None,
           force: bool) -> dict[str, Any]:
    """One rank: join the process group, run the experiment, check that every rank ended with
    the same weights (rank 0 records them in ``ranks.json``), report what it ended with."""
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    dist.init_process_group("nccl" if use_cuda else "gloo")
    try:
        try:
            outcome = run_experiment(files, bindings, out=out, device=device or "cpu",
                                     force=force, rank=rank, world_size=world_size,
                                     quiet=rank != 0)
        except errors.FpError as exc:  # handed to the launcher, which raises it as one sentence
            return {"error": str(exc), "error_type": type(exc).__name__}
        ranks = record_ranks(outcome.model, outcome.out_dir)
        dist.barrier()  # no rank tears its group down while a peer's last collective runs
        result = {"summary": outcome.summary, "digest": ranks[rank]["digest"],
                  "out_dir": str(outcome.out_dir)}
        del outcome
        return result
    finally:
        # the DistributedDataParallel wrapper holds the process group: freed now, not while the
        # interpreter shuts down (gloo's threads then abort the process after a finished run)
        gc.collect()
        dist.destroy_process_group()
