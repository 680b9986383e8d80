"""``fp bench``: how fast the framework's hot paths are. Every ratio is measured in one process
against a bound or a plain-PyTorch baseline timed in the same run (warmed up, then in pairs
run back to back in alternating order, the median over pairs), so the host's load, which slows
both halves of a pair alike, cancels rather than decides.

Rows: ``train_loop``, ``augment``, ``folder_train``, ``score/<measure>`` for every registered
measure, ``outside/<measure>/<model>`` (the public ``fp.score`` against a user's own gradient
loop, for the first-order and Hg measures, on a torchvision ResNet-18 and the CIFAR ResNet),
``outside/prune/<model>`` (the public ``fp.prune`` with taylor against Torch-Pruning's own
global Taylor pipeline, on torchvision ResNet-18, MobileNetV2 and ResNet-50),
``prune_surgery``, ``latency_target`` (a latency-target prune re-timed against its target),
``amp_channels_last`` (on CUDA), and ``cli_help`` / ``cli_list_measures``
(fresh ``fp`` processes against a fresh ``import typer``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from rich.text import Text
from rich.table import Table

from fp.tools.bench.augment import augment_row
from fp.tools.bench.startup import cli_rows
from fp.tools.bench.folder import check_data, folder_row
from fp.tools.bench.latency_row import latency_target_row
from fp.tools.bench.outside import outside_prune_rows, outside_rows, torchvision_model
from fp.tools.bench.scoring_cost import score_rows
from fp.tools.bench.surgery import prune_surgery_row
from fp.tools.bench.rows import skipped_row
from fp.tools.bench.training import AMP_TARGET, amp_row, train_loop_row
from fp import device as devices
from fp.manager import Manager, make_manager
from fp.pruning import build_model


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark is. Scoring follows the reference measurement (ResNet-56,
    CIFAR-shaped data, 5 batches of 128); the outside/ rows score 4 batches of 64 on both their
    models; ``QUICK`` shrinks everything to minutes on 2 cores."""

    score_architecture: str = "resnet56"
    score_batches: int = 5
    batch_size: int = 128               # images per batch, everywhere
    train_architecture: str = "resnet20"
    train_batches: int = 8              # optimizer steps per timed epoch
    augment_images: int = 10240
    loader_workers: int = 2             # the per-image baseline's DataLoader workers
    repeats: int = 3                    # timed pairs per row (after one warm-up pair)
    loop_repeats: int = 9               # for train_loop, whose target leaves 3% for noise
    classes: int = 10
    image_shape: tuple[int, int, int] = (3, 32, 32)
    outside_torchvision: str = "resnet18"  # a torchvision.models builder, for the outside/ rows
    outside_batches: int = 4            # the outside/ rows' batches (on both of their models)
    outside_batch_size: int = 64
    outside_repeats: int = 5            # timed pairs per outside/ row (their median is the ratio)
    #: the outside/prune/ rows' torchvision models, each with its image side in pixels
    prune_models: tuple[tuple[str, int], ...] = (("resnet18", 32), ("mobilenet_v2", 32),
                                                 ("resnet50", 64))
    prune_batches: int = 4              # scoring batches of each outside/prune/ row
    prune_batch_size: int = 32
    prune_repeats: int = 5              # timed pairs per outside/prune/ row


FULL = Sizes()
QUICK = Sizes(score_architecture="resnet20", score_batches=2, train_batches=4, repeats=5,
              augment_images=2560,
              outside_batches=2, outside_repeats=9, prune_batches=2, prune_repeats=3)


def bench(quick: bool = False, device: str = "cpu", *, sizes: Sizes | None = None,
          manager: Manager | None = None, data: Path | None = None,
          on_row: Callable[[dict[str, Any]], None] = lambda row: None) -> list[dict[str, Any]]:
    """Run every benchmark and return one JSON-ready row each (see ``rows.make_row``).
    ``sizes`` overrides ``FULL``/``QUICK``; ``data`` (CIFAR-10 JPEGs, an archive or a folder)
    gives folder_train real images; ``on_row`` sees each row as soon as it is done."""
    data = None if data is None else check_data(data)
    sizes = sizes or (QUICK if quick else FULL)
    where = devices.resolve(device, what="--device")
    manager = manager or make_manager()
    rows: list[dict[str, Any]] = []

    def add(row: dict[str, Any]) -> None:
        rows.append(dict(row, **machine_state()))
        on_row(rows[-1])

    add(train_loop_row(manager, architecture=sizes.train_architecture,
                       batches=sizes.train_batches, batch_size=sizes.batch_size,
                       repeats=sizes.loop_repeats, device=where))
    add(augment_row(synthetic_data(manager, sizes, sizes.augment_images),
                    batch_size=sizes.batch_size, workers=sizes.loader_workers,
                    repeats=sizes.repeats, device=where))
    add(folder_row(manager, architecture=sizes.train_architecture, batches=sizes.train_batches,
                   batch_size=sizes.batch_size, repeats=sizes.repeats, device=where,
                   shape=sizes.image_shape, data=data))
    model = build_model(sizes.score_architecture, num_classes=sizes.classes,
                        in_channels=sizes.image_shape[0], manager=manager).to(where)
    batches = bench_batches(manager, sizes, where)
    measures = [manager.registries["measures"].build(n)
                for n in manager.registries["measures"].names()]
    score_rows(model, batches, measures, repeats=sizes.repeats, device=where, on_row=add)
    outside = {f"torchvision_{sizes.outside_torchvision}":
               torchvision_model(sizes.outside_torchvision, sizes.classes).to(where),
               sizes.score_architecture: model}
    outside_rows(outside, bench_batches(manager, sizes, where, sizes.outside_batches,
                                        sizes.outside_batch_size),
                 repeats=sizes.outside_repeats, device=where, on_row=add)
    outside_prune_rows(sizes.prune_models, batches=sizes.prune_batches,
                       batch_size=sizes.prune_batch_size, classes=sizes.classes,
                       repeats=sizes.prune_repeats, device=where, on_row=add)
    add(prune_surgery_row(model, batches[0], repeats=sizes.repeats, device=where))
    add(latency_target_row(model, batches[:1], batch_size=sizes.batch_size, device=where))
    add(mixed_precision_row(manager, sizes, where))
    for row in cli_rows(repeats=sizes.repeats):
        add(row)
    return rows


def mixed_precision_row(manager: Manager, sizes: Sizes, device: torch.device) -> dict[str, Any]:
    """bf16 + channels_last pays off on tensor cores; on a CPU the row says why it is absent."""
    if device.type != "cuda":
        return skipped_row("amp_channels_last", AMP_TARGET, baseline="fp32 training epoch",
                           notes=f"skipped on {device.type}: bf16 autocast + channels_last is a "
                                 f"CUDA speed-up")
    return amp_row(manager, architecture=sizes.train_architecture, batches=sizes.train_batches,
                   batch_size=sizes.batch_size, repeats=sizes.repeats, device=device)


def machine_state() -> dict[str, Any]:
    """What else shaped the timings: torch's CPU threads and the 1-minute load average (on 2
    cores, a load above 2 means other processes took turns with both sides of every ratio)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"threads": torch.get_num_threads(), "load_1min": load}


def synthetic_data(manager: Manager, sizes: Sizes, images: int):
    return manager.registries["datasets"].build(
        "synthetic", num_train=images, num_test=1, shape=sizes.image_shape,
        num_classes=sizes.classes)


def bench_batches(manager: Manager, sizes: Sizes, device: torch.device,
                  batches: int | None = None, batch_size: int | None = None):
    """Normalised, un-augmented batches, already on the device (as a prune event draws them):
    ``score_batches`` of ``batch_size`` unless given."""
    batches, batch_size = batches or sizes.score_batches, batch_size or sizes.batch_size
    data = synthetic_data(manager, sizes, batches * batch_size)
    return list(data.loader("train", batch_size, device=device))


def format_rows(rows: list[dict[str, Any]]) -> Table:
    """The rows as a rich table: a missed target in red, a skipped row dimmed."""
    table = Table("benchmark", "ratio", "target", "ok", "measured s", "baseline s", "notes",
                  title="fp bench (ratios measured side by side in one process: median over pairs; "
                        "times: fastest of each side)")
    for row in rows:
        if row.get("skipped"):
            table.add_row(row["name"], "-", row["target"], Text("skipped", style="dim"), "-", "-",
                          Text(row["notes"], style="dim"))
            continue
        verdict = Text("yes", style="green") if row["ok"] else Text("NO", style="red")
        if row["ratio"] is None:  # nothing to time: the notes say why (a target not reached)
            table.add_row(row["name"], "-", row["target"], verdict, "-", "-", Text(row["notes"]))
            continue
        table.add_row(row["name"], f"{row['ratio']:.3f}x", row["target"], verdict,
                      f"{row['measured_s']:.4f}", f"{row['baseline_s']:.4f}",
                      Text(f"{row['notes']} (baseline: {row['baseline']})"))
    return table


__all__ = ["FULL", "QUICK", "Sizes", "bench", "format_rows"]
