"""What ranks of a torch.distributed run share: rank 0's buffers, and a digest to check that
they agree. The launcher is ``fp.engine.launch``."""
from __future__ import annotations

import hashlib

import torch
import torch.distributed as dist


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
