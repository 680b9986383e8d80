"""Timing that a comparison can trust, for latency targets, ``fp eval`` and ``fp bench``: the
device synchronised before every clock read (``seconds``), and the runs being compared
interleaved, the order reversed every other round (``interleave``), so that drifting load (other
processes, clocks, heat) hits every side alike. On top of that, two kinds of timing:

- forward passes (``time_forward``, ``time_forward_pair``, ``saturating_batch``): eval mode, no
  autograd, warm-up passes, the median of enough repeats to fill a time budget, two models timed
  interleaved, and the batch at which throughput stops growing. The caller's model is never
  altered: it is deep-copied when it has to be moved or converted (device, channels-last,
  bfloat16 weights) and its train/eval flags are put back otherwise;
- side-by-side ratios (``measure_ratio``): a measured task and its baseline warmed up, then timed
  in pairs in alternating order, the ratio the median over pairs (``fp bench``'s rows)."""
from __future__ import annotations

import contextlib
import copy
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from fp.errors import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}  # by their command-line names
MIN_REPEATS, MAX_REPEATS = 5, 1000  # bounds on the repeats unless ``repeats`` fixes them
#: saturating_batch: doubling the batch must raise images/s by more than this factor to go on
GAIN = 1.05
#: measure_ratio: at most this many back-to-back runs make one timed sample of the shorter side
MAX_RUNS = 8
#: time_forward_pair: seconds of repeats (both models together) unless told otherwise
PAIR_TIME_S = 0.5
#: a timed alternative replaces the default only when it takes less than (1 − MARGIN) of its time
MARGIN = 0.03
clock = time.perf_counter  # a module attribute, so that tests can drive a fake clock


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on a CUDA ``device`` (nothing to wait for elsewhere)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synced_clock(device: torch.device) -> float:
    """The clock, read once the work queued on ``device`` is done."""
    synchronize(device)
    return clock()


def seconds(run: Callable[[], Any], device: torch.device) -> float:
    """Seconds one call of ``run`` takes, ``device`` synchronised before both clock reads: queued
    GPU work must finish, or the clock times its launch only."""
    synchronize(device)
    start = clock()
    run()
    synchronize(device)
    return clock() - start


def interleave(runs: Sequence[Callable[[], float]], *, warmup: int = 0,
               repeats: int | None = None, min_time_s: float = 0.0,
               max_repeats: int = MAX_REPEATS) -> list[list[float]]:
    """Each run's seconds per repeat: ``warmup`` untimed rounds, then rounds of every run in
    turn, the order reversed every other round (A B, B A, A B ...) so that neither always
    follows the other. Without ``repeats``: rounds until the runs' mean total reaches
    ``min_time_s``, at least MIN_REPEATS, at most ``max_repeats``."""
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


@dataclass
class ForwardTiming:
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

    def forward(self, x: torch.Tensor) -> Any:
        with (torch.autocast(self.device.type, dtype=self.dtype)
              if self.precision.endswith("autocast") else contextlib.nullcontext()):
            return self.model(x)

    @torch.inference_mode()
    def once(self, x: torch.Tensor) -> float:
        return seconds(lambda: self.forward(x), self.device)

    def timing(self, batch: int, times: list[float]) -> ForwardTiming:
        return ForwardTiming(statistics.median(times), spread(times), len(times), batch,
                             str(self.device), str(self.dtype)[6:], self.channels_last,
                             self.precision, times)


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


def time_forward(model: nn.Module, example: torch.Tensor, batch: int, *, device: torch.device | str,
                 dtype: torch.dtype | str = torch.float32, channels_last: bool = False,
                 warmup: int = 3, repeats: int | None = None, min_time_s: float = 0.5,
                 max_repeats: int = MAX_REPEATS) -> ForwardTiming:
    """The median seconds of ``model``'s forward pass on ``example`` repeated to ``batch``."""
    with ready(model, device=device, dtype=dtype, channels_last=channels_last) as r:
        x = r.inputs(example, batch)
        [times] = interleave([lambda: r.once(x)], warmup=warmup, repeats=repeats,
                             min_time_s=min_time_s, max_repeats=max_repeats)
        return r.timing(batch, times)


def time_forward_pair(dense: nn.Module, pruned: nn.Module, example: torch.Tensor, batch: int, *,
                      device: torch.device | str, dtype: torch.dtype | str = torch.float32,
                      channels_last: bool = False, warmup: int = 3, repeats: int | None = None,
                      min_time_s: float = PAIR_TIME_S, max_repeats: int = MAX_REPEATS
                      ) -> tuple[ForwardTiming, ForwardTiming]:
    """(dense, pruned) forward timings at ``batch``, their repeats interleaved so that drifting
    load hits both alike."""
    options = dict(device=device, dtype=dtype, channels_last=channels_last)
    with ready(dense, **options) as a, ready(pruned, **options) as b:
        xa, xb = a.inputs(example, batch), b.inputs(example, batch)
        ta, tb = interleave([lambda: a.once(xa), lambda: b.once(xb)], warmup=warmup,
                            repeats=repeats, min_time_s=min_time_s, max_repeats=max_repeats)
        return a.timing(batch, ta), b.timing(batch, tb)


def saturating_batch(model: nn.Module, example: torch.Tensor, *, device: torch.device | str,
                     dtype: torch.dtype | str = torch.float32, channels_last: bool = False,
                     start: int = 1, max_batch: int = 4096, gain: float = GAIN, patience: int = 2,
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
                [times] = interleave([lambda: r.once(x)], warmup=warmup, repeats=repeats,
                                     min_time_s=min_time_s, max_repeats=max_repeats)
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


@dataclass
class Task:
    """One repetition runs ``run(prepare())``; only ``run`` is timed (``prepare`` makes fresh
    copies and the like)."""

    run: Callable[[Any], Any]
    prepare: Callable[[], Any] = lambda: None

    def seconds(self, device: torch.device, runs: int = 1) -> float:
        """Mean seconds of ``runs`` back-to-back runs, each after its own untimed ``prepare``."""
        total = 0.0
        for _ in range(runs):
            state = self.prepare()
            total += seconds(lambda: self.run(state), device)
        return total / runs


def as_task(work: Task | Callable[[], Any]) -> Task:
    return work if isinstance(work, Task) else Task(lambda _: work())


@dataclass
class PairedTimes:
    """Seconds per repetition of a measured task and its baseline; ``measured[i]`` and
    ``baseline[i]`` ran back to back."""

    measured: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)

    def ratio(self, speedup: bool = False) -> float:
        """The median over pairs of measured/baseline time (the inverse for a speed-up). The two
        runs of a pair are back to back, so a slow phase of the host (seconds of contention,
        which on a shared machine slows both) cancels within the pair, and the median ignores
        pairs that a short burst hit on one side only. (Each side's fastest repetition, which
        ``fp bench``'s rows also report, lets one lucky quiet moment decide the ratio.)"""
        pairs = [b / m if speedup else m / b for m, b in zip(self.measured, self.baseline)]
        return statistics.median(pairs)


def measure_ratio(measured: Task | Callable[[], Any], baseline: Task | Callable[[], Any], *,
                  repeats: int, device: torch.device, warmup: int = 1,
                  balance: bool = True) -> PairedTimes:
    """Warm both up (one-off costs: allocator, kernel selection, lazy imports), then time
    ``repeats`` pairs interleaved, the baseline first in the first pair. With ``balance``, a
    sample of the shorter side is the mean of as many back-to-back runs (up to MAX_RUNS) as make
    it about as long as the other, so that the two halves of a pair see the host's load alike
    (a short sample is more likely than a long one to fall wholly in a quiet moment)."""
    sides = [as_task(baseline), as_task(measured)]
    warm = interleave([lambda task=task: task.seconds(device) for task in sides], repeats=warmup)
    last = [times[-1] for times in warm] if warmup else []
    runs = [1, 1]
    if balance and last and min(last) > 0:
        shorter = last.index(min(last))
        runs[shorter] = min(MAX_RUNS, max(1, round(max(last) / last[shorter])))
    base, timed = interleave([lambda task=task, n=n: task.seconds(device, n)
                              for task, n in zip(sides, runs)], repeats=repeats)
    return PairedTimes(measured=timed, baseline=base)
