"""``--mode layout``: what keeping channels-last through surgery buys, in under 2 minutes.

One model, the protocol's fast variant (ResNet-56 at CIFAR size, bf16 autocast, channels-last
weights and inputs), pruned by one real prune event (``fp.prune`` with the experiment's measure at
its first round). Surgery keeps each tensor's layout, so the pruned model is channels-last again;
torch-pruning alone gives contiguous NCHW tensors, which this mode emulates on a copy
(``.contiguous()`` on every 4-d parameter; a fresh optimizer's momentum follows its parameter).
Then:

- ``layout_steps``: 100 training steps of each, on channels-last inputs, interleaved and paired
  (``fp.timing.measure_ratio``: the contiguous copy first in the first pair, the order reversed
  in every other pair, the speed-up the median over pairs);
- ``recompile``: the pruned model compiled afresh as the engine compiles it after a prune event
  (``torch.compiler.reset()``, then ``torch.compile(..., dynamic=False)``), timed to its first
  training step done, after an untimed compile of a tiny function has paid the compiler's
  one-off imports and worker start (in a run, a recompile follows earlier compiles).
"""
from __future__ import annotations

import contextlib
import copy
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import fp
from fp import timing
from fp.nn import channels_last_names

from . import monitor, probes, steps
from .budget import LAYOUT_PARTS, Plan
from .check import synthetic_bindings
from .monitor import clock
from .parts import Parts
from .sizes import AMP, EXPERIMENT, REPO, Sizes


class Layout(Parts):
    """The layout mode's parts in order, sharing the built run and its two pruned models."""

    mode = "layout"

    def __init__(self, sizes: Sizes, stack: contextlib.ExitStack, *, budget: float | None = None,
                 startup_s: float | None = None):
        super().__init__(sizes, Plan(LAYOUT_PARTS, budget, startup_s))
        self.stack = stack
        self.run_ = None
        self.models: dict[str, torch.nn.Module] = {}
        self.eager_step_s: float | None = None

    def run(self) -> dict[str, Any]:
        self.part("environment", lambda: monitor.environment(self.device))
        self.part("layout_build", self.build)
        if self.models:
            self.part("layout_steps", self.layout_steps)
            self.part("recompile", self.recompile)
        else:
            for name in ("layout_steps", "recompile"):
                self.report["parts"][name] = {"ok": False, "error": "layout_build failed, so "
                                                                    "there is no pruned model"}
        self.report["summary"] = self.summary()
        return self.report

    def build(self) -> dict[str, Any]:
        """The experiment built in its fast variant, pruned once by its own measure, and the
        contiguous copy that stands for surgery without layout keeping."""
        files = [str(REPO / EXPERIMENT)]
        bindings = [*synthetic_bindings(self.sizes), *self.sizes.shrink, *AMP,
                    f"experiment.device = '{self.device}'"]
        out = self.stack.enter_context(tempfile.TemporaryDirectory(prefix="fp-gpu-layout-"))
        start = time.perf_counter()
        self.run_ = run = probes.built_run(files, bindings, Path(out))
        built_s = time.perf_counter() - start
        dense = channels_last_names(run.model)
        target = probes.first_rounds(run)[0].target
        prune = run.settings.prune
        example = torch.zeros(1, run.dataset.in_channels, *run.dataset.image_size,
                              device=self.device)
        drawn = run.scoring_batches(1)
        start = clock(self.device)
        fp.prune(run.model, run.measure, drawn, target, example_inputs=example,
                 target_type=prune.target_type, max_fraction=prune.max_fraction,
                 protected=tuple(prune.protected), temperature=prune.temperature,
                 round_to=prune.round_to, residual=prune.residual)
        prune_s = clock(self.device) - start
        kept, contiguous = run.model, as_torch_pruning_leaves_it(run.model)
        self.models = {"channels_last": kept, "contiguous": contiguous}
        after = channels_last_names(kept)
        lost = sorted(set(dense) - set(after))
        return {"ok": not lost and bool(after), "architecture": run.settings.model.architecture,
                "measure": prune.measure, "pruned_fraction": round(target, 4),
                "build_s": round(built_s, 3), "prune_s": round(prune_s, 4),
                "train_batch_size": run.settings.train.batch_size,
                "channels_last_tensors": {"dense": len(dense), "after_surgery": len(after),
                                          "contiguous_copy": len(channels_last_names(contiguous))},
                "layout_lost_in_surgery": lost}

    def layout_steps(self) -> dict[str, Any]:
        run, pairs = self.run_, self.sizes.layout_pairs
        per = max(1, self.sizes.layout_steps // pairs)
        kept, flat = (steps.training_step(run, self.models[name], amp=True, channels_last=True,
                                          batch=self.sizes.step_batch)
                      for name in ("channels_last", "contiguous"))
        found = steps.paired(lambda: kept(per), lambda: flat(per), steps=per, pairs=pairs,
                             device=self.device)
        self.eager_step_s = found["measured_step_s"]
        return {"inputs": "channels-last, bf16 autocast", "batch": len(kept.y),
                "contiguous_step_s": found.pop("baseline_step_s"),
                "channels_last_step_s": found.pop("measured_step_s"),
                "channels_last_speedup": found.pop("speedup"), **found,
                "still_channels_last": len(channels_last_names(self.models["channels_last"]))}

    def recompile(self) -> dict[str, Any]:
        backend = self.sizes.compile_backend
        warmup_s = warm_compiler(backend, self.device)
        model = self.models["channels_last"]
        torch.compiler.reset()  # as the engine does after every prune event
        start = clock(self.device)
        compiled = torch.compile(model, backend=backend, dynamic=False)
        step = steps.training_step(self.run_, model, amp=True, channels_last=True,
                                   forward=compiled, batch=self.sizes.step_batch)
        step(1)
        first_s = clock(self.device) - start
        per = max(1, self.sizes.layout_steps // self.sizes.layout_pairs)
        step(1)  # its optimizer state exists now, as in the timed steps before
        step_s = timing.seconds(lambda: step(per), self.device) / per
        return {"backend": backend, "compiler_warmup_s": round(warmup_s, 3),
                "recompile_s": round(first_s, 3), "compiled_step_s": round(step_s, 6),
                "eager_step_s": self.eager_step_s,
                "recompile_beyond_a_step_s": round(first_s - step_s, 3),
                "note": "recompile_s: from torch.compile afresh to the end of the first training "
                        "step (forward and backward graphs compiled, one optimizer step)"}

    def summary(self) -> dict[str, Any]:
        found = self.report["parts"]
        build, timed = found.get("layout_build", {}), found.get("layout_steps", {})
        return {**self.common_summary(), "experiment": EXPERIMENT,
                "architecture": build.get("architecture"),
                "surgery_kept_layout": build.get("ok") if "channels_last_tensors" in build
                else None,
                "channels_last_speedup": timed.get("channels_last_speedup"),
                "recompile_s": found.get("recompile", {}).get("recompile_s"),
                "time": self.time_report()}


def as_torch_pruning_leaves_it(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` with every 4-d parameter contiguous (NCHW), as torch-pruning's surgery
    leaves the tensors it rebuilds."""
    flat = copy.deepcopy(model)
    for param in flat.parameters():
        if param.dim() == 4:
            param.data = param.data.contiguous()
    return flat


def warm_compiler(backend: str, device: torch.device) -> float:
    """Compile and run, forward and backward, a tiny function: the compiler's one-off costs
    (imports, its worker processes) paid before a timed compile. Its seconds."""
    start = clock(device)
    tiny = torch.compile(lambda x: torch.relu(x * 2.0).sum(), backend=backend, dynamic=False)
    x = torch.ones(64, device=device, requires_grad=True)
    tiny(x).backward()
    return clock(device) - start
