"""What the GPU check records about the machine and watches while a part runs: the environment,
clocks read after a CUDA synchronisation, peak GPU memory (reset between parts), GPU utilisation
sampled in a background thread; and the one-line form of a part's error. The memory a device can
still give is ``fp.device.free_memory``, the figure scoring budgets its graphs by."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from statistics import mean
from typing import Any

import torch

from fp import precision

NO_CUDA = "no CUDA in dry-run"
MB = 2 ** 20
#: set by benchmarks/gpu_check.sh: whether it had to install the checkout to make fp importable
INSTALL_ENV = "FP_GPU_CHECK_INSTALL"


def environment(device: torch.device) -> dict[str, Any]:
    found = {"python": sys.version.split()[0], "torch": torch.__version__,
             "cuda_build": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
             "fp_install": os.environ.get(INSTALL_ENV, "not started by gpu_check.sh"),
             "cpus": os.cpu_count(), "nvidia_smi": shutil.which("nvidia-smi"),
             "tf32_at_start": precision.tf32_enabled()}  # torch's default, before any run sets it
    if device.type != "cuda":
        return {**found, "gpu": {"skipped": NO_CUDA}}
    props = torch.cuda.get_device_properties(device)
    free, total = torch.cuda.mem_get_info(device)
    return {**found, "gpu": {"name": props.name, "capability": f"{props.major}.{props.minor}",
                             "memory_mb": round(total / MB), "free_mb": round(free / MB),
                             "bf16": torch.cuda.is_bf16_supported()}}


def clock(device: torch.device) -> float:
    """``time.perf_counter()`` once the work queued on a CUDA ``device`` is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, Any]:
    if device.type != "cuda":
        return {"skipped": NO_CUDA}
    return {"allocated_mb": round(torch.cuda.max_memory_allocated(device) / MB, 1),
            "reserved_mb": round(torch.cuda.max_memory_reserved(device) / MB, 1)}


class Utilisation:
    """GPU utilisation sampled every ``interval`` s in a background thread while the block runs:
    nvidia-smi where it exists, else ``torch.cuda.utilization()``, else a reason."""

    def __init__(self, device: torch.device, interval: float = 0.5):
        self.device, self.interval = device, interval
        self.samples: list[float] = []
        self.source, self.reason = None, ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _smi(self) -> float:
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
        if index < len(visible) and visible[index].strip().isdigit():
            index = int(visible[index])
        out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu",
                              "--format=csv,noheader,nounits", "-i", str(index)],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return float(out.split()[0])

    def __enter__(self) -> "Utilisation":
        if self.device.type != "cuda":
            self.reason = NO_CUDA
            return self
        readers = [("nvidia-smi", self._smi)] if shutil.which("nvidia-smi") else []
        readers.append(("torch.cuda.utilization",
                        lambda: float(torch.cuda.utilization(self.device))))
        problems = [] if readers[0][0] == "nvidia-smi" else ["no nvidia-smi on PATH"]
        for source, read in readers:
            try:
                read()
            except Exception as exc:  # noqa: BLE001 - try the next reader
                problems.append(f"{source}: {error_text(exc)}")
                continue
            self.source, self._read = source, read
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
            return self
        self.reason = "; ".join(problems)
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.samples.append(self._read())
            except Exception:  # noqa: BLE001 - a missed sample is not worth a failure
                pass

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def result(self) -> dict[str, Any]:
        if self.source is None:
            return {"percent": None, "reason": self.reason} if self.reason != NO_CUDA \
                else {"skipped": NO_CUDA}
        if not self.samples:
            return {"source": self.source, "percent": None, "reason": "no sample was taken"}
        return {"source": self.source, "mean_percent": round(mean(self.samples), 1),
                "max_percent": max(self.samples), "samples": len(self.samples)}


def error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0] if text else type(exc).__name__
