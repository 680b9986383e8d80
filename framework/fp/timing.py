"""Forward-pass timing that a comparison can trust: eval mode, no autograd, warm-up passes, the
device synchronised before every clock read, the median of enough repeats to fill a time budget,
two models timed in interleaved order, and the batch at which throughput stops growing. The
caller's model is never altered: it is deep-copied when it has to be moved or converted (device,
channels-last, bfloat16 weights) and its train/eval flags are put back otherwise."""
from __future__ import annotations

import contextlib
import copy
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import nn

from fp.errors import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}  # by their command-line names
MIN_REPEATS, MAX_REPEATS = 5, 1000  # bounds on the repeats unless ``repeats`` fixes them
clock = time.perf_counter  # a module attribute, so that tests can drive a fake clock


@dataclass
class Timing:
    """Seconds per forward pass of one ``batch``: the median of ``repeats`` timed passes, and
    their relative spread (p75 − p25) / median. ``precision`` says how ``dtype`` was applied:
    "float32", "bfloat16 autocast" or "bfloat16 weights" (where autocast is not available).
    ``dataclasses.asdict`` gives it as plain JSON data, ``images_per_s`` included."""

    median_s: float
    spread: float
    repeats: int
    batch: int
    device: str
    dtype: str
    channels_last: bool
    precision: str = ""
    times_s: list[float] = field(default_factory=list, repr=False)
    images_per_s: float = field(init=False)

    def __post_init__(self) -> None:
        self.images_per_s = self.batch / self.median_s if self.median_s > 0 else float("inf")


def dtype_of(dtype: torch.dtype | str) -> torch.dtype:
    """``torch.float32``/``torch.bfloat16`` or their names; anything else is a ConfigError."""
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    if dtype in DTYPES.values():
        return dtype
    raise ConfigError(f"dtype {dtype!r} cannot be timed; use one of {', '.join(DTYPES)}.")


class Ready:
    """A model prepared for timing on one device: :meth:`inputs` makes a batch, :meth:`once`
    times one forward pass of it in seconds."""

    def __init__(self, model: nn.Module, device: torch.device, dtype: torch.dtype,
                 channels_last: bool, precision: str):
        self.model, self.device, self.dtype = model, device, dtype
        self.channels_last, self.precision = channels_last, precision

    def inputs(self, example: torch.Tensor, batch: int) -> torch.Tensor:
        """``example``'s sample (a 4-D ``example`` is a batch: its first image) ``batch`` times."""
        sample = example[0] if example.dim() == 4 else example
        x = sample.detach().to(self.device).unsqueeze(0).expand(batch, *sample.shape).clone()
        x = x.to(self.dtype) if self.precision.endswith("weights") else x
        channels_last = self.channels_last and x.dim() == 4
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    def sync(self) -> None:  # queued GPU work must finish, or the clock times its launch only
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.inference_mode()
    def once(self, x: torch.Tensor) -> float:
        self.sync()
        start = clock()
        with (torch.autocast(self.device.type, dtype=self.dtype)
              if self.precision.endswith("autocast") else contextlib.nullcontext()):
            self.model(x)
        self.sync()
        return clock() - start

    def timing(self, batch: int, times: list[float]) -> Timing:
        return Timing(statistics.median(times), spread(times), len(times), batch, str(self.device),
                      str(self.dtype)[6:], self.channels_last, self.precision, times)


def spread(times: list[float]) -> float:
    """(p75 − p25) / median: 0 for steady repeats, 0.1 when the middle half spans 10%."""
    if len(times) < 2:
        return 0.0
    q1, median, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return (q3 - q1) / median if median > 0 else 0.0


@contextlib.contextmanager
def ready(model: nn.Module, *, device: torch.device | str, dtype: torch.dtype | str = torch.float32,
          channels_last: bool = False) -> Iterator[Ready]:
    """``model`` in eval mode on ``device``: a deep copy if it has to move or be converted, else
    the model itself with its train/eval flags restored on exit."""
    device, dtype = torch.device(device), dtype_of(dtype)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    precision = "float32"
    if dtype == torch.bfloat16:
        usable = getattr(torch.amp, "is_autocast_available", lambda kind: kind in ("cpu", "cuda"))
        precision = "bfloat16 autocast" if usable(device.type) else "bfloat16 weights"
    moves = any(t.device != device for t in (*model.parameters(), *model.buffers()))
    flags = [(m, m.training) for m in model.modules()]
    if moves or channels_last or precision.endswith("weights"):
        model = copy.deepcopy(model).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        if precision.endswith("weights"):
            model = model.to(dtype)
        flags = []
    try:
        yield Ready(model.eval(), device, dtype, channels_last, precision)
    finally:
        for module, training in flags:
            module.train(training)


def sample_times(runs: list[Callable[[], float]], warmup: int, repeats: int | None,
                 min_time_s: float, max_repeats: int) -> list[list[float]]:
    """Warm-up passes, then repeats of every run in turn, the order reversed every other round
    (A B B A ...) so that neither always follows the other. Without ``repeats``: rounds until the
    runs' mean total reaches ``min_time_s``, at least MIN_REPEATS, at most ``max_repeats``."""
    for _ in range(warmup):
        for run in runs:
            run()
    times: list[list[float]] = [[] for _ in runs]
    order = list(range(len(runs)))
    while True:
        done = len(times[0])
        if repeats is not None:
            if done >= repeats:
                return times
        elif done >= max_repeats or (done >= MIN_REPEATS
                                     and sum(map(sum, times)) / len(runs) >= min_time_s):
            return times
        for i in (order if done % 2 == 0 else order[::-1]):
            times[i].append(runs[i]())


def time_forward(model: nn.Module, example: torch.Tensor, batch: int, *, device: torch.device | str,
                 dtype: torch.dtype | str = torch.float32, channels_last: bool = False,
                 warmup: int = 3, repeats: int | None = None, min_time_s: float = 0.5,
                 max_repeats: int = MAX_REPEATS) -> Timing:
    """The median seconds of ``model``'s forward pass on ``example`` repeated to ``batch``."""
    with ready(model, device=device, dtype=dtype, channels_last=channels_last) as r:
        x = r.inputs(example, batch)
        [times] = sample_times([lambda: r.once(x)], warmup, repeats, min_time_s, max_repeats)
        return r.timing(batch, times)


def compare(dense: nn.Module, pruned: nn.Module, example: torch.Tensor, batch: int, *,
            device: torch.device | str, dtype: torch.dtype | str = torch.float32,
            channels_last: bool = False, warmup: int = 3, repeats: int | None = None,
            min_time_s: float = 0.5, max_repeats: int = MAX_REPEATS) -> tuple[Timing, Timing]:
    """(dense, pruned) timings at ``batch``, their repeats interleaved so that drifting load
    (other processes, clocks, heat) hits both alike."""
    options = dict(device=device, dtype=dtype, channels_last=channels_last)
    with ready(dense, **options) as a, ready(pruned, **options) as b:
        xa, xb = a.inputs(example, batch), b.inputs(example, batch)
        ta, tb = sample_times([lambda: a.once(xa), lambda: b.once(xb)], warmup, repeats,
                              min_time_s, max_repeats)
        return a.timing(batch, ta), b.timing(batch, tb)


def saturating_batch(model: nn.Module, example: torch.Tensor, *, device: torch.device | str,
                     dtype: torch.dtype | str = torch.float32, channels_last: bool = False,
                     start: int = 1, max_batch: int = 4096, gain: float = 1.05, patience: int = 2,
                     warmup: int = 3, repeats: int | None = None, min_time_s: float = 0.25,
                     max_repeats: int = MAX_REPEATS) -> tuple[int, list[tuple[int, float]]]:
    """Double the batch from ``start`` until images/s stops rising by more than ``gain`` for
    ``patience`` doublings in a row (one noisy point does not end the search), the next batch
    would pass ``max_batch`` or a batch runs out of memory; return the smallest batch within
    ``gain`` of the best images/s seen, and the curve [(batch, images/s), ...]."""
    if start < 1 or max_batch < start or gain < 1 or patience < 1:
        raise ConfigError(f"saturating_batch needs 1 <= start <= max_batch, gain >= 1 and "
                          f"patience >= 1, got {start}, {max_batch}, {gain} and {patience}.")
    curve: list[tuple[int, float]] = []
    with ready(model, device=device, dtype=dtype, channels_last=channels_last) as r:
        batch = start
        while batch <= max_batch:
            try:
                x = r.inputs(example, batch)
                [times] = sample_times([lambda: r.once(x)], warmup, repeats, min_time_s, max_repeats)
            except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is one too
                oom = isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc)
                if not oom or not curve:
                    raise
                break  # the last good batch is the largest that fits
            finally:
                x = None  # this batch's memory is free before the next is made
            curve.append((batch, r.timing(batch, times).images_per_s))
            if len(curve) > patience and max(ips for _, ips in curve[-patience:]) <= gain * max(
                    ips for _, ips in curve[:-patience]):
                break
            batch *= 2
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # what the failed batch held goes back to the device
    best = max(ips for _, ips in curve)
    return next(b for b, ips in curve if ips * gain >= best), curve
