"""Which Hessian-vector product method is cheaper here: measured on one batch, once per process
for a model class, device, dtype and batch shape; and what keeping first-order graphs costs.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn


@dataclass
class Probe:
    """Seconds per batch that each method adds to a plain gradient pass, measured on one batch:
    double backward pays the first pass's create_graph (``graph_s`` − ``plain_s``) and the
    backward through it (``double_s``); it recomputes the first pass (``graph_s``) for a batch
    whose graph was not kept. Forward over reverse costs ``jvp_s`` (None: unsupported)."""

    plain_s: float
    graph_s: float
    double_s: float
    jvp_s: float | None
    jvp_error: str = ""
    graph_bytes: int = 0                # what one batch's kept first-order graph holds

    def costs(self, kept_share: float) -> dict[str, float]:
        double = self.graph_s + self.double_s - kept_share * self.plain_s
        return {"double_backward": double} | ({} if self.jvp_s is None
                                              else {"forward_over_reverse": self.jvp_s})

    def choice(self, kept_share: float) -> str:
        costs = self.costs(kept_share)
        return min(costs, key=costs.get)


#: share of the device's free memory that kept first-order graphs may use by default
MEMORY_SHARE = 0.5
#: probes made in this process, by (model class, device type, dtype, batch shape, layout)
PROBES: dict[tuple, Probe] = {}
#: (method, device type) pairs that have run here: a first call pays one-off setup (torch.func
#: builds its transforms, cuDNN picks kernels) that must not decide a probe
WARM: set[tuple[str, str]] = set()


def probe_key(model: nn.Module, x: Tensor) -> tuple:
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    return type(model).__qualname__, x.device.type, x.dtype, tuple(x.shape), channels_last


def clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def free_memory(device: torch.device) -> int:
    """Bytes the device can still give: free GPU memory, or the host's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


class SavedBytes:
    """Bytes of the tensors autograd saves inside the block, each storage counted once and the
    parameters not at all: what keeping the graph costs beyond the model itself."""

    def __init__(self, params: Sequence[Tensor]):
        self.skip = {p.untyped_storage().data_ptr() for p in params}
        self.bytes = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self.skip:
            self.skip.add(storage.data_ptr())
            self.bytes += storage.nbytes()
        return tensor

    def __enter__(self) -> "SavedBytes":
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)


def kept_share(graph_bytes: int, budget: float, batches: int) -> float:
    """The fraction of ``batches`` whose first-order graphs fit in ``budget`` bytes."""
    keep = batches if graph_bytes <= 0 else min(batches, int(budget // graph_bytes))
    return keep / batches
