"""Training steps as the engine runs them, outside a run, for side-by-side timings: the same
forward (bf16 autocast with ``experiment.amp``, inputs made channels-last each step with
``experiment.channels_last``), the training loss at the protocol's temperature (``fp.nn``), and
the run's SGD. Timed in pairs with ``fp.timing.measure_ratio`` (the two sides interleaved, the
baseline first in the first pair, the ratio the median over pairs), here for TF32 off against on
(``experiment.tf32``, which sets ``fp.precision.set_tf32`` for training)."""
from __future__ import annotations

import contextlib
import copy
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from fp import precision, timing
from fp.nn import tempered_loss

if TYPE_CHECKING:  # pragma: no cover
    from fp.run import Run


@dataclass
class TrainingStep:
    """``steps`` optimizer steps of ``forward`` on one fixed batch ``(x, y)``."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    x: torch.Tensor
    y: torch.Tensor
    temperature: float
    amp: bool = False
    channels_last: bool = False

    def __call__(self, steps: int = 1) -> None:
        for _ in range(steps):
            x = self.x.contiguous(memory_format=torch.channels_last) if self.channels_last \
                else self.x
            with (torch.autocast(self.x.device.type, dtype=torch.bfloat16) if self.amp
                  else contextlib.nullcontext()):
                logits = self.forward(x)
            loss = tempered_loss(logits.float(), self.y, self.temperature)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()


def training_step(run: "Run", model: nn.Module, *, amp: bool, channels_last: bool,
                  forward: Callable | None = None, batch: int | None = None) -> TrainingStep:
    """Steps of ``model`` (in training mode, with a fresh optimizer of the run's ``train.*``
    settings) on the first ``batch`` images (None: all) of the run's first training batch;
    ``forward`` (None: the model) is what a step calls, a compiled model for instance."""
    x, y = next(iter(run.train_loader))
    st = run.settings.train
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=st.lr,
                                momentum=st.momentum, weight_decay=st.weight_decay,
                                nesterov=st.nesterov)
    model.train()
    return TrainingStep(model if forward is None else forward, optimizer, x[:batch], y[:batch],
                        st.temperature, amp=amp, channels_last=channels_last)


def paired(measured: Callable[[], Any], baseline: Callable[[], Any], *, steps: int, pairs: int,
           device: torch.device) -> dict[str, Any]:
    """Seconds per step of two step callables (each call ``steps`` steps), timed in ``pairs``
    interleaved pairs after one warm-up call each, and the baseline/measured speed-up."""
    times = timing.measure_ratio(measured, baseline, repeats=pairs, device=device, warmup=1,
                                 balance=False)
    return {"steps_per_sample": steps, "pairs": pairs, "steps_timed": steps * pairs,
            "baseline_step_s": round(statistics.median(times.baseline) / steps, 6),
            "measured_step_s": round(statistics.median(times.measured) / steps, 6),
            "speedup": round(times.ratio(speedup=True), 4)}


def tf32_training(run: "Run", steps: int, pairs: int, batch: int | None = None) -> dict[str, Any]:
    """fp32 training steps (the protocol's fp32 variant) of a copy of the run's model with TF32
    off (``experiment.tf32 = False``, the default) against on, paired; the flags found are put
    back afterwards."""
    model = copy.deepcopy(run.model)
    step = training_step(run, model, amp=False, channels_last=False, batch=batch)

    def under(enabled: bool) -> Callable[[], None]:
        return lambda: (precision.set_tf32(enabled), step(steps))

    saved = precision.tf32_flags()
    try:
        found = paired(under(True), under(False), steps=steps, pairs=pairs, device=run.device)
    finally:
        precision.restore(saved)
    effect, why = tf32_effect(run.device)
    return {"variant": "fp32 (no autocast), contiguous", "batch": len(step.y),
            "fp32_step_s": found.pop("baseline_step_s"),
            "tf32_step_s": found.pop("measured_step_s"),
            "tf32_speedup": found.pop("speedup"), **found, "tf32_has_effect": effect,
            "why": why, "tf32_enabled_after": precision.tf32_enabled()}


def tf32_effect(device: torch.device) -> tuple[bool, str]:
    """Whether TF32 can change anything on ``device``, and why."""
    if device.type != "cuda":
        return False, f"TF32 is a CUDA tensor-core format: on the {device.type} both sides are fp32"
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        return False, f"compute capability {major}.{minor} has no TF32 (it needs 8.0 or later)"
    return True, f"compute capability {major}.{minor} has TF32 tensor cores"
