"""Devices by name: the spellings flowprune accepts, whether a name is usable on this machine, and
the one resolver from a name to a ``torch.device`` that ``fp run``, ``fp eval``, ``fp intervene``
and ``fp bench`` share. The spelling is checked without importing torch (``fp --help`` stays
fast); whether the device exists is checked with torch."""
from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from fp.errors import ConfigError

if TYPE_CHECKING:
    import torch

FORMS = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
PATTERN = r"auto|cpu|mps|cuda(:\d+)?"


def well_spelt(name: str) -> bool:
    return re.fullmatch(PATTERN, name) is not None


def problem(name: str) -> str | None:
    """Why ``name`` is not a usable device on this machine (a phrase), or None."""
    if not well_spelt(name):
        return f"must be {FORMS}"
    if name in ("auto", "cpu"):
        return None
    import torch

    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        return None if mps is not None and mps.is_available() else "names no available device (no MPS here)"
    count = torch.cuda.device_count()
    index = int(name.partition(":")[2] or 0)
    if count == 0:
        return "names no available device (no CUDA GPU here; use 'cpu' or 'auto')"
    if index >= count:
        return f"names no available device (this machine has {count} CUDA device(s))"
    return None


def resolve(name: str, *, what: str = "device") -> torch.device:
    """The device ``name`` means here: 'auto' is the GPU if there is one, else the CPU. A name
    this machine cannot use raises ConfigError, the sentence beginning with ``what``."""
    import torch

    why = problem(name)
    if why is not None:
        raise ConfigError(f"{what} {name!r} {why}.")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def free_memory(device: torch.device) -> int:
    """Bytes ``device`` can still give: on a GPU, what is free to PyTorch (the device's free
    memory plus the blocks PyTorch's caching allocator holds reserved but unallocated, which
    ``mem_get_info`` counts as used), else the host's available memory (0 where neither
    /proc/meminfo nor sysconf says)."""
    if device.type == "cuda":
        import torch

        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return torch.cuda.mem_get_info(device)[0] + max(0, cached)
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
