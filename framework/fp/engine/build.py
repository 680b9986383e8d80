"""Turning resolved settings into a live experiment (model, data, measure, schedule, optimizer)."""
from __future__ import annotations

from pathlib import Path

import torch

from fp import config, pruning
from fp.engine import optim, rundir
from fp.engine.prune_event import scoring_batches
from fp import device as devices
from fp.engine.checkpoint import Setup, make_forward, seed_everything
from fp.manager import Manager
from fp.run import Run
from fp.config.settings import Settings
from fp.data.holdout import SCORING_KEY, hold_out
from fp.data.subsets import apply_subsets


def build_setup(settings: Settings, manager: Manager, out_dir: Path, rank: int = 0,
                world_size: int = 1) -> Setup:
    st = settings
    seed_everything(st.experiment.seed)
    device = devices.resolve(st.experiment.device, what="experiment.device =")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    regs = manager.registries
    # the same seeded per-class subset on every rank, and again on resume
    dataset = apply_subsets(regs["datasets"].build(st.data.dataset), st.data, st.experiment.seed)
    # V: seeded from experiment.seed alone, so the same on every rank, measure and resume
    held = hold_out(dataset, st.data.eval_samples, st.experiment.seed, device)
    model = pruning.build_model(st.model.architecture, num_classes=dataset.num_classes,
                                in_channels=dataset.in_channels,
                                init=st.model.init).to(device)
    if st.experiment.channels_last:
        model = model.to(memory_format=torch.channels_last)
    example_inputs = torch.zeros(1, dataset.in_channels, *dataset.image_size, device=device)
    dense = pruning.dense_stats(model, example_inputs)  # what targets are fractions of
    measure = regs["measures"].build(st.prune.measure)
    schedule = regs["schedules"].build(st.prune.schedule)
    # train.batch_size is the global batch: each of the world_size ranks takes its share
    per_rank = max(1, st.train.batch_size // world_size)
    train_loader = dataset.loader("train", per_rank, shuffle=True, augment=True,
                                  device=device, seed=st.experiment.seed, rank=rank,
                                  world_size=world_size)
    test_loader = dataset.loader("test", st.train.test_batch_size, device=device, rank=rank,
                                 world_size=world_size)
    plan = (schedule.plan(st.prune.target, st.prune.rounds, st.train.epochs, len(train_loader))
            if st.prune.target > 0 else [])
    run = Run(out_dir=out_dir, manager=manager, model=model, dataset=dataset,
              train_loader=train_loader, test_loader=test_loader,
              optimizer=optim.make_optimizer(model, st.train), measure=measure, device=device,
              config=st.as_dict(), settings=st, rank=rank, world_size=world_size, dense=dense,
              eval_set=held.batches)
    metrics_log = rundir.MetricsLog(out_dir / "metrics.jsonl")
    setup = Setup(settings=st, run=run, plan=plan,
                  total_epochs=schedule.total_epochs(st.train.epochs, st.prune.rounds),
                  cycle_epochs=st.train.epochs, example_inputs=example_inputs,
                  metrics_log=metrics_log,
                  rewind_epoch=getattr(schedule, "rewind_epoch", 0) if any(p.rewind for p in plan) else None)
    if run.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        setup.write_operative_config(run)
        rundir.write_text(out_dir / "config.gin", config.config_text())
        run.state["_metrics_writer"] = metrics_log
    run.state["_scoring_batches"] = scoring_batches
    if held.scoring is not None:  # prune events score on the training split without V
        run.state[SCORING_KEY] = held.scoring
    ckpt = rundir.load_checkpoint(out_dir)
    if ckpt is not None:
        setup.restore(run, ckpt)
    else:
        setup.save(run)
    setup.forward = make_forward(run)
    return setup
