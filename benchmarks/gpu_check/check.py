"""The default mode of the GPU check: the environment, a NCCL group, data on the device, one prune
event of each paper measure (its ranking scored again with TF32 allowed), paired training steps
with TF32 off and on, and 2-3 epochs of the paper's ResNet-56 protocol in fp32 and in bf16 +
channels_last (and compiled, opt-in), extrapolated to 160 epochs; parts in order, inside the
``budget`` plan."""
from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import fp

from . import monitor, probes, steps, train
from .budget import CHECK_PARTS, COMPILE_PART, Plan, with_compile, worst_case_s
from .parts import Parts
from .sizes import COMPILED, EXPERIMENT, FOLDER, REPO, VARIANTS, Sizes


class Check(Parts):
    """The parts in order, sharing the data plan and the dense experiment the probes use."""

    mode = "check"

    def __init__(self, sizes: Sizes, stack: contextlib.ExitStack, *, data: Path | None = None,
                 epochs: int | None = None, budget: float | None = None, compile: str = "auto",
                 startup_s: float | None = None):
        self.compile_skipped = compile_skip_reason(compile, torch.device(sizes.device))
        parts = CHECK_PARTS if self.compile_skipped else with_compile(CHECK_PARTS)
        super().__init__(sizes, Plan(parts, budget, startup_s))
        self.stack, self.archive = stack, data
        self.epochs = epochs or sizes.epochs
        self.files, self.bindings, self._run = [EXPERIMENT], [], None

    def run(self) -> dict[str, Any]:
        self.part("environment", lambda: monitor.environment(self.device))
        self.part("process_group", self.process_group)
        if not self.part("data", self.data)["ok"]:
            self.use_synthetic()
            self.report["parts"]["data"]["fallback"] = "the other parts use synthetic data"
        self.part("on_device_data", self.on_device_data)
        self.part("scoring", lambda: probes.prune_events(
            self.built(), deadline=self.deadline("scoring")))
        self.part("tf32_training", lambda: steps.tf32_training(
            self.built(), self.sizes.tf32_steps, self.sizes.tf32_pairs, self.sizes.step_batch))
        self._run = None  # frees its data and model before training measures peak memory
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.training()
        self.report["summary"] = self.summary()
        return self.report

    def process_group(self) -> dict[str, Any]:
        found = probes.process_group(self.sizes.backend, self.device,
                                     timeout=max(5.0, self.deadline("process_group")
                                                 - time.perf_counter()))
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
        self.files, self.bindings = [EXPERIMENT], synthetic_bindings(self.sizes)

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
            key = f"train_{name}"
            if name == COMPILED and self.compile_skipped:
                timed[name] = self.skip(key, self.compile_skipped)
                continue
            if not plan:
                self.report["parts"][key] = timed[name] = {
                    "ok": False, "error": "the protocol part failed, so nothing was timed"}
                continue
            if name == COMPILED:
                extra = (*extra, f"experiment.compile_backend = {self.sizes.compile_backend!r}")
            timed[name] = self.part(key, lambda extra=extra, key=key: train.time_variant(
                files, [*bindings, *plan["short"], *extra], plan["proto"], device=self.device,
                deadline=self.deadline(key)))
        self.part("compile", lambda: train.compare(timed))

    def summary(self) -> dict[str, Any]:
        found = self.report["parts"]
        return {**self.common_summary(), "experiment": EXPERIMENT, "epochs_timed": self.epochs,
                "data": found.get("data", {}).get("source", "synthetic"),
                "full_protocol_h": {n: p["extrapolation"]["full_protocol_h"] for n, p in
                                    found.items() if "extrapolation" in p},
                "compile_pays": found.get("compile", {}).get("compile_pays"),
                "compile_verdict": found.get("compile", {}).get("verdict"),
                "tf32": tf32_summary(found),
                "time": self.time_report()}


def compile_skip_reason(choice: str, device: torch.device) -> str:
    """Why the compiled variant is not timed ("" when it is): ``--compile no``, or ``auto`` on a
    GPU, where it is opt-in (the dry run rehearses it with the eager backend)."""
    if choice == "yes" or (choice == "auto" and device.type != "cuda"):
        return ""
    if choice == "no":
        return "--compile no"
    extra = sum(COMPILE_PART.values())
    return (f"opt-in on a GPU (--compile yes): it adds its own {extra:.0f} s to the budget, a "
            f"slot of {worst_case_s(sum(CHECK_PARTS.values()) + extra) / 60:.1f} min in all, "
            f"for an Inductor compile of every model it trains")


def synthetic_bindings(sizes: Sizes) -> list[str]:
    train_n, test_n, pixels = sizes.synthetic
    return ["data.dataset = 'synthetic'", f"synthetic.num_train = {train_n}",
            f"synthetic.num_test = {test_n}", f"synthetic.shape = (3, {pixels}, {pixels})",
            "train.lr = 0.01"]  # random labels: a small step keeps the loss finite


def tf32_summary(parts: dict[str, Any]) -> dict[str, Any]:
    """The TF32 report in short: per measure, how far its ranking moved; how much faster a
    training step ran."""
    measures = parts.get("scoring", {}).get("measures", {})
    rankings = {name: {key: m["tf32"][key] for key in ("spearman", "decisions_differ")}
                for name, m in measures.items() if "spearman" in m.get("tf32", {})}
    training = parts.get("tf32_training", {})
    return {"rankings": rankings, "training_step_speedup": training.get("tf32_speedup"),
            "tf32_has_effect": training.get("tf32_has_effect")}
