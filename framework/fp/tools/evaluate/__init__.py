"""``fp eval``: a saved pruned model's test accuracy, size and measured speed, next to the dense
architecture it was pruned from (untrained: used for parameters, FLOPs and speed only);
docs/eval.md says how the speed is measured and how to read it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from rich.console import Group
from rich.table import Table
from rich.text import Text
from torch import nn

from fp import pruning
from fp.config import parse_recorded
from fp.errors import CheckpointError, ConfigError
from fp.manager import Manager, make_manager
from fp.pruning.arch import arch_of
from fp.timing import DTYPES
from fp.data.subsets import apply_subsets
from fp.tools.evaluate.speed import measure_speed, recorded_field, speed_notes, speed_rows, timing_device


def evaluate(target: str | Path, *, device: str | None = None, batch_size: int = 256,
             dataset: str | None = None, warmup: int = 3, repeats: int | None = None,
             dtype: str = "float32", channels_last: bool = False, min_time_s: float = 0.5,
             max_batch: int = 4096) -> dict[str, Any]:
    """Evaluate a run directory's ``model.pt`` (on the dataset its config.gin names) or a model
    file (``dataset``, a registered name, required) on ``device`` (default: the run's own, else
    the CPU). Accuracy is computed in float32 in batches of ``batch_size``; speed is timed in
    ``dtype`` (``fp.tools.evaluate.speed``): each timing is the median of ``repeats`` forward passes
    after ``warmup`` untimed ones (by default as many as fill ``min_time_s``)."""
    check_counts(batch_size, warmup, repeats, max_batch)
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r} is not supported; use {' or '.join(DTYPES)}.")
    model_path, run_dir = locate(Path(target))
    manager = make_manager()
    data = load_dataset(run_dir, dataset, manager, model_path)
    torch_device = timing_device(device, run_dir)
    model = pruning.load(model_path, manager=manager).to(torch_device).eval()
    arch = arch_of(model)
    check_fits(arch, data, model_path)
    dense = pruning.build_model(arch["name"], manager=manager, **arch["kwargs"]).to(torch_device).eval()
    example = torch.zeros(1, data.in_channels, *data.image_size, device=torch_device)
    accuracy, samples = test_accuracy(model, data, batch_size, torch_device)
    images = torch.randn(data.in_channels, *data.image_size, generator=torch.Generator().manual_seed(0))
    speed = measure_speed(dense, model, images, device=torch_device, dtype=dtype,
                          channels_last=channels_last, warmup=warmup, repeats=repeats,
                          min_time_s=min_time_s, max_batch=max_batch)
    return {"model": str(model_path), "architecture": arch["name"], "dataset": data.name,
            "device": str(torch_device), "batch_size": batch_size, "warmup": warmup,
            "repeats": repeats, "test_acc": accuracy, "test_samples": samples,
            **sizes(model, dense, example), **masked_share(model), **speed}


def sizes(model: nn.Module, dense: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Parameters (masked weights do not count) and FLOPs per image, pruned and dense."""
    return {"params": pruning.count_params(model, getattr(model, "fp_masks", None)),
            "dense_params": pruning.count_params(dense),
            "flops": pruning.count_flops(model, example),
            "dense_flops": pruning.count_flops(dense, example)}


def masked_share(model: nn.Module) -> dict[str, Any]:
    """For a model pruned with ``prune.residual = "masked"``: its masked filters, and the share
    of its remaining filters they are (masks zero filters but keep computing them)."""
    widths = pruning.filter_widths(model)
    masked = sum(widths.values()) - sum(pruning.kept_widths(model).values())
    if not masked:
        return {}
    return {"masked_filters": masked, "masked_frac": masked / sum(widths.values())}


def check_counts(batch_size: int, warmup: int, repeats: int | None, max_batch: int = 1) -> None:
    for name, value, least in (("batch size", batch_size, 1), ("warmup", warmup, 0),
                               ("repeats", 1 if repeats is None else repeats, 1),
                               ("max batch", max_batch, 1)):
        if not isinstance(value, int) or value < least:
            raise ConfigError(f"{name} must be an integer of at least {least}, got {value!r}.")


def locate(target: Path) -> tuple[Path, Path | None]:
    """(model file, run directory or None) for a run directory or a model file."""
    if target.is_dir():
        model_path = target / "model.pt"
        if not model_path.is_file():
            raise CheckpointError(f"{model_path} does not exist; the run has not finished (run "
                                  f"`fp run` with --out {target} again to resume it).")
        return model_path, target
    if not target.is_file():
        raise CheckpointError(f"{target} is neither a run directory nor a saved model file.")
    return target, None


def load_dataset(run_dir: Path | None, name: str | None, manager: Manager, model_path: Path):
    """The test data: ``name`` if given, else the run's dataset with its own gin arguments
    (``digits.size``, ``cifar10.root``, ...) read back from the run's config.gin."""
    datasets = manager.registries["datasets"]
    if run_dir is not None and (run_dir / "config.gin").is_file():
        settings = parse_recorded(run_dir / "config.gin", manager)  # binds the dataset's args
        if name and name != settings.data.dataset:
            return datasets.build(name)
        # the run's own dataset: the test images it was evaluated on (data.test_per_class)
        return apply_subsets(datasets.build(settings.data.dataset), settings.data,
                             settings.experiment.seed)
    if run_dir is not None and not name:
        name = recorded_field(run_dir, "dataset")
    if not name:
        raise ConfigError(f"evaluating the model file {model_path} needs --dataset (a registered "
                          f"dataset name; `fp list datasets` shows them).")
    return datasets.build(name)


def check_fits(arch: dict[str, Any], data, model_path: Path) -> None:
    """A model built for other data would fail deep inside its forward pass; say so plainly."""
    for key, have in (("in_channels", data.in_channels), ("num_classes", data.num_classes)):
        wanted = arch["kwargs"].get(key)
        if wanted is not None and wanted != have:
            raise ConfigError(f"{model_path} was built for {key}={wanted} but dataset "
                              f"{data.name!r} has {have}; pass the dataset it was trained on.")


@torch.inference_mode()
def test_accuracy(model: nn.Module, data, batch_size: int, device: torch.device) -> tuple[float, int]:
    correct = seen = 0
    for inputs, targets in data.loader("test", batch_size, device=device):
        correct += int((model(inputs).argmax(1) == targets).sum())
        seen += len(targets)
    return correct / max(seen, 1), seen


def format_eval(result: dict[str, Any]) -> Group:
    """The evaluation as a rich table (pruned against dense, size ratios and speed-ups) and
    lines saying how the speed was measured."""
    title = (f"{result['architecture']} on {result['dataset']}: test accuracy "
             f"{100 * result['test_acc']:.2f}% ({result['test_samples']} images, batch "
             f"{result['batch_size']})")
    table = Table("", "pruned", "dense", "pruned vs dense", title=title, title_justify="left")
    for label, key in (("parameters", "params"), ("FLOPs per image", "flops")):
        pruned, dense = result[key], result[f"dense_{key}"]
        table.add_row(label, f"{pruned:,}", f"{dense:,}", f"{pruned / dense:.1%}" if dense else "–")
    for row in speed_rows(result):
        table.add_row(*row)
    notes = [result["model"], *speed_notes(result)]
    if result.get("masked_filters"):
        notes.append(f"{result['masked_filters']:,} filters ({result['masked_frac']:.1%} of the "
                     f"model's physical filters) are masked (prune.residual = 'masked'): they count "
                     f"as pruned in parameters and FLOPs above, but are still computed, so masks "
                     f"save no latency and raise no throughput.")
    return Group(table, Text("\n".join(notes)))
