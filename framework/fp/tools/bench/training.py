"""Training cost: ``fp.engine.loop.train_epoch`` over a Run built as ``fp run`` builds one (gin
settings, synthetic data, the default plugins started) against a bare PyTorch loop; and, on a
GPU, the bf16 autocast + channels_last step against fp32."""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F

from fp import config
from fp.timing import measure_ratio
from fp.tools.bench.rows import make_row
from fp.engine.build import Setup, build_setup
from fp.engine.loop import EpochProgress, train_epoch
from fp.manager import Manager

LOOP_TARGET = "<= 1.03"
AMP_TARGET = ">= 1.0"


@contextlib.contextmanager
def built_run(manager: Manager, *, architecture: str, batches: int, batch_size: int,
              device: torch.device, extra: Sequence[str] = ()) -> Iterator[Setup]:
    """A Run on ``batches`` batches of synthetic CIFAR-shaped data, with run_start called (the
    default plugins, such as the gradient-flow diagnostics, track every step) and run_end after."""
    bindings = ["data.dataset = 'synthetic'",
                f"synthetic.num_train = {batches * batch_size}", "synthetic.num_test = 16",
                f"model.architecture = '{architecture}'", f"train.batch_size = {batch_size}",
                "train.lr = 0.01",  # random labels: a small step keeps the loss finite
                f"experiment.device = '{device}'", *extra]
    with tempfile.TemporaryDirectory(prefix="fp-bench-") as out_dir:
        settings = config.parse([], bindings, manager)
        setup = build_setup(settings, manager, Path(out_dir))
        manager.call("run_start", run=setup.run)
        try:
            yield setup
        finally:
            manager.call("run_end", run=setup.run, summary={})


def fp_epoch(setup: Setup):
    """One framework epoch, as the engine runs it (the loader's next epoch, a fresh progress)."""
    def epoch() -> None:
        run = setup.run
        run.train_loader.set_epoch(run.step)  # a new shuffle and augmentation every time
        train_epoch(run, setup.forward, on_step=lambda: None, progress=EpochProgress())
    return epoch


def bare_epoch(setup: Setup, batches: list[tuple[torch.Tensor, torch.Tensor]]):
    """The hand-written loop: same model, optimizer, loss and temperature, tensors pre-made."""
    run = setup.run
    model, optimizer = run.model, run.optimizer
    temperature = run.settings.train.temperature

    def epoch() -> None:
        model.train()
        for x, y in batches:
            loss = F.cross_entropy(model(x) / temperature, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return epoch


def train_loop_row(manager: Manager, *, architecture: str, batches: int, batch_size: int,
                   repeats: int, device: torch.device) -> dict[str, Any]:
    with built_run(manager, architecture=architecture, batches=batches, batch_size=batch_size,
                   device=device) as setup:
        premade = [(x.clone(), y.clone()) for x, y in setup.run.train_loader]
        timing = measure_ratio(fp_epoch(setup), bare_epoch(setup, premade), repeats=repeats,
                         device=device)
    return make_row("train_loop", timing, LOOP_TARGET,
                    baseline="bare PyTorch loop over pre-made batches on the device",
                    notes=f"{architecture}, {batches} steps of {batch_size}; fp's side includes "
                          f"its augmenting loader, metrics and the after_step hooks")


def amp_row(manager: Manager, *, architecture: str, batches: int, batch_size: int,
            repeats: int, device: torch.device) -> dict[str, Any]:
    """experiment.amp + experiment.channels_last against the same run in fp32 (speed-up)."""
    with built_run(manager, architecture=architecture, batches=batches, batch_size=batch_size,
                   device=device) as fp32, \
            built_run(manager, architecture=architecture, batches=batches,
                      batch_size=batch_size, device=device,
                      extra=["experiment.amp = True", "experiment.channels_last = True"]) as amp:
        timing = measure_ratio(fp_epoch(amp), fp_epoch(fp32), repeats=repeats, device=device)
    return make_row("amp_channels_last", timing, AMP_TARGET, speedup=True,
                    baseline="the same fp training epoch in fp32, contiguous layout",
                    notes=f"{architecture}, {batches} steps of {batch_size}, bf16 autocast")
