"""The speed half of ``fp eval``: batch-1 latency and throughput at the dense model's saturating
batch, dense and pruned timed in interleaved order (``fp.timing``), with speed-ups."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fp import device as devices, timing
from fp.errors import ConfigError

#: above this spread the notes warn that the speed-ups are uncertain
NOISY = 0.2


def timing_device(asked: str | None, run_dir: Path | None) -> torch.device:
    """``--device``, else the device the run trained on (its summary.json), else the CPU."""
    recorded = None if asked or run_dir is None else recorded_field(run_dir, "device")
    if recorded is None:
        return devices.resolve(asked or "cpu", what="--device")
    problem = devices.problem(recorded)
    if problem is not None:
        raise ConfigError(f"the run's device {recorded!r} (its summary.json) {problem}; pass "
                          f"--device to time the model on another.")
    return devices.resolve(recorded)


def recorded_field(run_dir: Path, key: str) -> Any:
    """``key`` of the run's summary.json, or None when the file or the key is missing."""
    try:
        return json.loads((run_dir / "summary.json").read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def measure_speed(dense: nn.Module, pruned: nn.Module, example: torch.Tensor, *,
                  device: torch.device, dtype: str, channels_last: bool, warmup: int,
                  repeats: int | None, min_time_s: float, max_batch: int) -> dict[str, Any]:
    """Every speed number of ``fp eval``, as plain JSON data. Latency is batch 1; throughput is
    measured at the batch where the dense model's images/s saturates, for both models, and the
    pruned model's own saturating batch is reported beside it."""
    options = dict(device=device, dtype=dtype, channels_last=channels_last, warmup=warmup,
                   repeats=repeats)
    lat_dense, lat_pruned = timing.time_forward_pair(dense, pruned, example, 1,
                                                     min_time_s=min_time_s, **options)
    search = dict(options, max_batch=max_batch, min_time_s=min_time_s / 2)
    batch, dense_curve = timing.saturating_batch(dense, example, **search)
    own_batch, pruned_curve = timing.saturating_batch(pruned, example, **search)
    thr_dense, thr_pruned = timing.time_forward_pair(dense, pruned, example, batch,
                                                     min_time_s=min_time_s, **options)
    timings = (lat_dense, lat_pruned, thr_dense, thr_pruned)
    return {
        "dtype": dtype, "channels_last": channels_last, "precision": lat_dense.precision,
        "min_time_s": min_time_s,
        "latency_ms": 1000 * lat_pruned.median_s, "dense_latency_ms": 1000 * lat_dense.median_s,
        "latency_speedup": ratio(lat_dense.median_s, lat_pruned.median_s),
        "speedup": ratio(lat_dense.median_s, lat_pruned.median_s),  # the latency speed-up
        "throughput_batch": batch, "images_per_s": thr_pruned.images_per_s,
        "dense_images_per_s": thr_dense.images_per_s,
        "throughput_speedup": ratio(thr_pruned.images_per_s, thr_dense.images_per_s),
        "pruned_saturating_batch": own_batch,
        "pruned_saturating_images_per_s": dict(pruned_curve)[own_batch],
        "pruned_saturating_speedup": ratio(dict(pruned_curve)[own_batch], thr_dense.images_per_s),
        "saturation": {"gain": timing.GAIN, "max_batch": max_batch, "dense": dense_curve,
                       "pruned": pruned_curve},
        "repeats_used": [min(t.repeats for t in timings), max(t.repeats for t in timings)],
        "max_spread": max(t.spread for t in timings),
        "timings": {"latency": {"dense": asdict(lat_dense), "pruned": asdict(lat_pruned)},
                    "throughput": {"dense": asdict(thr_dense), "pruned": asdict(thr_pruned)}},
    }


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def speed_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The table's speed rows: label, pruned, dense, speed-up."""
    batch, own = result["throughput_batch"], result["pruned_saturating_batch"]
    rows = [("latency (ms, batch 1)", f"{result['latency_ms']:.3f}",
             f"{result['dense_latency_ms']:.3f}", f"{result['latency_speedup']:.2f}x speed-up"),
            (f"throughput (images/s, batch {batch})", f"{result['images_per_s']:,.0f}",
             f"{result['dense_images_per_s']:,.0f}", f"{result['throughput_speedup']:.2f}x speed-up")]
    if own != batch:  # each model at its own saturating batch
        rows.append((f"throughput (images/s, pruned at its own batch {own})",
                     f"{result['pruned_saturating_images_per_s']:,.0f}",
                     f"{result['dense_images_per_s']:,.0f}",
                     f"{result['pruned_saturating_speedup']:.2f}x speed-up"))
    return rows


def speed_notes(result: dict[str, Any]) -> list[str]:
    """How the speed rows were measured: device, precision, layout, batches, repeats, noise."""
    low, high = result["repeats_used"]
    repeats = f"{low}" if low == high else f"{low}–{high}"
    layout = "channels-last" if result["channels_last"] else "contiguous (NCHW)"
    saturation = result["saturation"]
    curve = ", ".join(f"{b}: {ips:,.0f}" for b, ips in saturation["dense"])
    return [f"timed on {result['device']} in {result['precision']}, {layout} memory format; "
            f"medians of {repeats} repeats after {result['warmup']} warm-up passes, dense and "
            f"pruned interleaved; spread (p75 − p25)/median at most {result['max_spread']:.1%}"
            + (" (noisy: other work shared the device; rerun on a quiet one)."
               if result["max_spread"] > NOISY else "."),
            f"throughput batch {result['throughput_batch']}: the smallest within "
            f"{saturation['gain'] - 1:.0%} of the dense model's best images/s, the batch doubled "
            f"until two doublings gained less, up to {saturation['max_batch']} or the memory's "
            f"limit (batch: images/s {curve})."]
