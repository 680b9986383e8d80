"""The GPU check's parts in order, each wrapped so that a failing part records
``{"ok": false, "error": ...}`` and the rest still run, inside one time budget; and the sizes
they run at (``FULL`` on the GPU, ``DRY`` on a CPU: the same functions, tiny numbers)."""
from __future__ import annotations

import contextlib
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

import fp

from . import monitor, probes, train

#: the checkout this benchmark lives in: the experiments are its gin/ files
REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = "gin/resnet56_snip.gin"
FOLDER = "gin/base/cifar10_folder.gin"
AMP = ["experiment.amp = True", "experiment.channels_last = True"]
VARIANTS = {"fp32": [], "amp_channels_last": AMP,
            "amp_channels_last_compile": [*AMP, "experiment.compile = True"]}


@dataclass(frozen=True)
class Sizes:
    """How big everything is: FULL is the paper protocol on the GPU, DRY the same code on a CPU."""

    device: str = "cuda"
    epochs: int = 3
    budget_s: float = 420.0                 # the whole check, inside an 8-minute slot
    shrink: tuple[str, ...] = ()            # bindings that make the experiment small
    synthetic: tuple[int, int, int] = (50000, 10000, 32)  # train, test images, pixels: CIFAR-10's
    folder_pixels: int | None = None        # imagefolder.image_size (None: the gin file's)
    per_class: int | None = None            # archive images unpacked per class (None: all)
    amp_reserve_s: float = 60.0             # kept for the bf16 run while fp32 trains
    compile_min_s: float = 150.0            # the least time left to start the compiled run
    backend: str = "nccl"


FULL = Sizes()
#: 16 training images of a class at least (synthetic: 256 with random labels, 21 or more of
#: each), so the balanced draws of grasp and grad_norm find their 12 per class
DRY = Sizes(device="cpu", epochs=2, budget_s=240.0, synthetic=(256, 64, 16), folder_pixels=16,
            per_class=16, amp_reserve_s=5.0, compile_min_s=0.0, backend="gloo",
            shrink=("model.architecture = 'resnet20'", "train.batch_size = 64",
                    "train.test_batch_size = 64", "prune.samples = 128", "prune.batch_size = 64"))


def log(message: str) -> None:
    print(f"gpu_check: {message}", file=sys.stderr, flush=True)


class Check:
    """The parts in order, sharing the data plan and the dense experiment the probes use."""

    def __init__(self, sizes: Sizes, stack: contextlib.ExitStack, *, data: Path | None = None,
                 epochs: int | None = None, budget: float | None = None, compile: str = "auto"):
        self.sizes, self.stack, self.archive, self.compile = sizes, stack, data, compile
        self.device = torch.device(sizes.device)
        self.epochs = epochs or sizes.epochs
        self.start = time.perf_counter()
        self.end = self.start + (budget or sizes.budget_s)
        self.report: dict[str, Any] = {"summary": {}, "parts": {}}
        self.files, self.bindings, self._run = [EXPERIMENT], [], None

    def left(self) -> float:
        return self.end - time.perf_counter()

    def part(self, name: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        log(f"{name} ({self.left():.0f} s of the budget left)")
        self.report["parts"][name] = found = {"ok": False, "error": "still running"}
        monitor.reset_peak(self.device)
        start = time.perf_counter()
        try:
            found.update({"ok": True, "error": None, **work()})
        except Exception as exc:  # noqa: BLE001 - one failing part must not stop the others
            found["error"] = monitor.error_text(exc)
            log(f"{name} failed: {found['error']}")
            traceback.print_exc(file=sys.stderr)  # the whole story for the log, one line in JSON
        if found["error"] is None:
            del found["error"]
        found.update(part_s=round(time.perf_counter() - start, 3),
                     peak_gpu_memory=monitor.peak_memory(self.device))
        return found

    def run(self) -> dict[str, Any]:
        self.part("environment", lambda: monitor.environment(self.device))
        self.part("process_group", self.process_group)
        if not self.part("data", self.data)["ok"]:
            self.use_synthetic()
            self.report["parts"]["data"]["fallback"] = "the other parts use synthetic data"
        self.part("on_device_data", self.on_device_data)
        self.part("scoring", lambda: probes.prune_events(self.built()))
        self._run = None  # frees its data and model before training measures peak memory
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.training()
        self.report["summary"] = self.summary()
        return self.report

    def process_group(self) -> dict[str, Any]:
        found = probes.process_group(self.sizes.backend, self.device)
        if self.sizes.backend != "nccl":
            found["nccl"] = {"skipped": monitor.NO_CUDA}
        return found

    def data(self) -> dict[str, Any]:
        if self.archive is None:
            self.use_synthetic()
            train_n, test_n, pixels = self.sizes.synthetic
            return {"source": "synthetic", "images": {"train": train_n, "test": test_n},
                    "pixels": pixels, "note": "no --data: random CIFAR-shaped images and labels; "
                                              "the timings hold, the accuracies mean nothing"}
        folder = Path(self.stack.enter_context(tempfile.TemporaryDirectory(prefix="fp-gpu-data-")))
        start = time.perf_counter()
        found = probes.unpack(self.archive, folder, self.sizes.per_class)
        self.files = [EXPERIMENT, FOLDER]
        pixels = self.sizes.folder_pixels
        self.bindings = [f"imagefolder.root = {found['root']!r}"] + (
            [f"imagefolder.image_size = {pixels}"] if pixels else [])
        return {"source": "folder", "archive": str(self.archive),
                "unpack_s": round(time.perf_counter() - start, 3), **found}

    def use_synthetic(self) -> None:
        train_n, test_n, pixels = self.sizes.synthetic
        self.files = [EXPERIMENT]
        self.bindings = ["data.dataset = 'synthetic'", f"synthetic.num_train = {train_n}",
                         f"synthetic.num_test = {test_n}",
                         f"synthetic.shape = (3, {pixels}, {pixels})",
                         "train.lr = 0.01"]  # random labels: a small step keeps the loss finite

    def common(self) -> tuple[list[str], list[str]]:
        files = [str(REPO / f) for f in self.files]
        return files, [*self.bindings, *self.sizes.shrink, f"experiment.device = '{self.device}'"]

    def built(self):
        """The experiment as ``fp run`` builds it, untrained (dense), for the probes."""
        if self._run is None:
            files, bindings = self.common()
            out = self.stack.enter_context(tempfile.TemporaryDirectory(prefix="fp-gpu-setup-"))
            self._run = probes.built_run(files, bindings, Path(out))
        return self._run

    def on_device_data(self) -> dict[str, Any]:
        start = time.perf_counter()
        run = self.built()  # a folder is decoded here (and cached beside its images)
        return {"build_s": round(time.perf_counter() - start, 3), **probes.on_device(run)}

    def training(self) -> None:
        files, bindings = self.common()
        plan: dict[str, Any] = {}

        def protocol() -> dict[str, Any]:
            manager = fp.make_manager()
            plan["proto"] = proto = train.protocol(files, bindings, manager)
            plan["short"], same = train.short_bindings(proto, self.epochs, manager)
            return {**proto, "short_run": plan["short"], "short_run_matches_protocol": same}

        self.part("protocol", protocol)
        timed: dict[str, dict[str, Any]] = {}
        for name, extra in VARIANTS.items():
            key, skip = f"train_{name}", self.skip_reason(name)
            if skip or not plan:
                self.report["parts"][key] = timed[name] = (
                    {"ok": True, "skipped": skip} if skip else
                    {"ok": False, "error": "the protocol part failed, so nothing was timed"})
                continue
            deadline = self.end - (self.sizes.amp_reserve_s if name == "fp32" else 10.0)
            timed[name] = self.part(key, lambda extra=extra, deadline=deadline: train.time_variant(
                files, [*bindings, *plan["short"], *extra], plan["proto"], device=self.device,
                deadline=deadline))
        self.part("compile", lambda: train.compare(timed))

    def skip_reason(self, name: str) -> str:
        if "compile" not in name or self.compile == "yes":
            return ""
        if self.compile == "no":
            return "--compile no"
        if self.device.type != "cuda":
            return f"{monitor.NO_CUDA} (torch.compile is timed on the GPU; --compile yes forces it)"
        if self.left() < self.sizes.compile_min_s:
            return (f"the time budget is short: {self.left():.0f} s left, the compiled run "
                    f"needs {self.sizes.compile_min_s:.0f} s")
        return ""

    def summary(self) -> dict[str, Any]:
        found = self.report["parts"]
        return {"ok": all(p.get("ok") for p in found.values()),
                "failed": [n for n, p in found.items() if not p.get("ok")],
                "dry_run": self.device.type != "cuda", "device": str(self.device),
                "gpu": found.get("environment", {}).get("gpu", {}).get("name"),
                "experiment": EXPERIMENT, "epochs_timed": self.epochs,
                "data": found.get("data", {}).get("source", "synthetic"),
                "full_protocol_h": {n: p["extrapolation"]["full_protocol_h"] for n, p in
                                    found.items() if "extrapolation" in p},
                "compile_pays": found.get("compile", {}).get("compile_pays"),
                "budget_s": round(self.end - self.start, 1),
                "total_s": round(time.perf_counter() - self.start, 2)}
