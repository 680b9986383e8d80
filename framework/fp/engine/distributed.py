"""What ranks of a torch.distributed run share: rank 0's buffers, and a digest to check that
they agree (``ranks.json``). The launcher is ``fp.engine.launch``."""
from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from fp.engine import rundir

RANKS = "ranks.json"


def weights_digest(model: torch.nn.Module) -> str:
    """A hash of every parameter and buffer, to check that ranks agree bit for bit."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def broadcast_buffers(model: torch.nn.Module, world_size: int) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics). DDP broadcasts them
    before each forward, so after the last step of an epoch they differ; scoring and evaluation
    use them and must see the same values on every rank."""
    if world_size > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer.data, src=0)


def record_ranks(model: torch.nn.Module | None, out_dir: Path) -> list[dict[str, Any]]:
    """Every rank's node (torchrun's GROUP_RANK), host and final weights digest, in rank order.
    Rank 0 writes them to ``ranks.json`` in the run directory; ranks that ended with different
    weights are a bug, raised on every rank. ``model`` is None for a run found finished."""
    digest = weights_digest(model) if model is not None else ""
    mine = {"rank": dist.get_rank(), "node": int(os.environ.get("GROUP_RANK", "0")),
            "host": socket.gethostname(), "digest": digest}
    ranks: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(ranks, mine)
    if mine["rank"] == 0 and model is not None:
        rundir.write_json(out_dir / RANKS, {"ranks": ranks})
    if len({r["digest"] for r in ranks}) > 1:
        raise RuntimeError(f"the ranks ended with different weights ({out_dir / RANKS} lists "
                           f"each rank's digest)")
    return ranks
