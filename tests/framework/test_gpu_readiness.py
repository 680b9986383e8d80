"""What a GPU run relies on, checked on the CPU: channels-last kept through surgery, resume and
loading; torch.compile that stays compiled through many prune events; resume on another device
count; plugin state moved to the model's device; scoring in full fp32 whatever training uses; the
memory budget from what PyTorch can still use; a distributed start where rank 0 decides."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fp
from fp import config, precision
from fp.device import free_memory
from fp.engine import checkpoint, run_experiment
from fp.engine.build import build_setup
from fp.nn import channels_last_names
from fp.run import PruneEvent

REPO = Path(__file__).parents[2]
QUICK = ["train.epochs = 3", "prune.rounds = 2", "prune.target = 0.5", "prune.samples = 64",
         "digits.size = 8", "train.batch_size = 64", "flow.enabled = False",
         "prune.preserve_momentum = True"]
CHANNELS_LAST = ["experiment.channels_last = True", "digits.size = 16"]


def four_d(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.dim() == 4}


def assert_channels_last(model: torch.nn.Module, optimizer=None) -> None:
    weights = four_d(model)
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last)
                           for p in weights.values()), [n for n, p in weights.items()]
    assert channels_last_names(model)  # strictly channels-last, not only degenerate shapes
    if optimizer is not None:
        buffers = [optimizer.state[p]["momentum_buffer"] for p in weights.values()
                   if "momentum_buffer" in optimizer.state.get(p, {})]
        assert buffers and all(b.is_contiguous(memory_format=torch.channels_last) for b in buffers)


class Formats:
    """A plugin that checks the layout of every weight and momentum buffer after each prune."""

    __name__ = "formats"

    def __init__(self):
        self.events = 0

    @fp.hookimpl
    def after_prune(self, run, event):
        assert_channels_last(run.model)
        self.events += 1

    @fp.hookimpl
    def after_step(self, run, step, loss):
        if self.events:  # momentum exists from the first step after a prune on
            assert_channels_last(run.model, run.optimizer)


def test_channels_last_survives_prune_events_resume_and_load(tmp_path):
    plugin = Formats()
    manager = fp.make_manager(autoload=False, plugins=(plugin,))
    outcome = run_experiment(["gin/quickstart.gin"], QUICK + CHANNELS_LAST, out=tmp_path / "r",
                             quiet=True, manager=manager)
    assert plugin.events == 2 and outcome.summary["filters_kept"] < outcome.summary["dense_filters"]
    assert_channels_last(fp.load(tmp_path / "r" / "model.pt"))
    # the finished run's last checkpoint, restored as a resume would: weights and momentum
    settings = config.parse(["gin/quickstart.gin"], QUICK + CHANNELS_LAST, manager)
    setup = build_setup(settings, manager, tmp_path / "r")
    assert setup.run.resumed
    assert_channels_last(setup.run.model, setup.run.optimizer)


def test_pruning_keeps_each_tensors_layout():
    from fp.pruning import build_model

    model = build_model("resnet20", num_classes=10, in_channels=3)
    layer = model.get_submodule("features.layer1.0.conv1")
    layer.to(memory_format=torch.channels_last)  # one layer only
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    before = set(channels_last_names(model))
    carry = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    model, record = fp.pruning.prune_event(model, "snip", [(x, y)], 0.5, carry=carry)
    name = "features.layer1.0.conv1.weight"
    assert record.pruned[name].numel() and set(channels_last_names(model)) == before == {name}
    carried = record.result.carried[name]
    assert carried.is_contiguous(memory_format=torch.channels_last)
    assert carried.shape == model.get_parameter(name).shape


@pytest.mark.slow
def test_compiled_training_stays_compiled_through_25_prune_events(tmp_path):
    binds = ["experiment.compile = True", "experiment.compile_backend = 'eager'",
             "prune.rounds = 25", "train.epochs = 26", "prune.target = 0.6",
             "data.train_per_class = 20", "prune.samples = 32", "train.batch_size = 32",
             "digits.size = 8", "flow.enabled = False", *CHANNELS_LAST]
    outcome = run_experiment(["gin/quickstart.gin"], binds, out=tmp_path / "c", quiet=True)
    compiled = outcome.summary["compile"]
    assert outcome.summary["prune_events"] == 25
    assert compiled["models_compiled"] == 26  # the start, then once after every event
    assert compiled["steps"] == outcome.summary["steps"] == compiled["compiled_steps"]
    assert compiled["ended_compiled"] and compiled["eager_epochs"] == []
    epochs = [json.loads(line) for line in (tmp_path / "c" / "metrics.jsonl").open()]
    per_epoch = [r["compiled_steps"] for r in epochs if r["event"] == "epoch"]
    assert len(per_epoch) == 26 and all(n == 200 // 32 + 1 for n in per_epoch)
    assert any("every one of its" in note and "ran compiled" in note for note in outcome.notes)
    assert_channels_last(outcome.model)


def test_a_step_dynamo_runs_eagerly_is_counted(tmp_path, monkeypatch):
    """Where dynamo gives up on a frame (its recompile limit), the step runs eagerly: counted,
    reported, and the run does not claim to have ended compiled."""
    import torch._dynamo

    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 0)
    binds = ["experiment.compile = True", "experiment.compile_backend = 'eager'",
             "data.train_per_class = 10", "train.batch_size = 50", *QUICK]
    outcome = run_experiment(["gin/quickstart.gin"], binds, out=tmp_path / "e", quiet=True)
    compiled = outcome.summary["compile"]
    assert compiled["compiled_steps"] < compiled["steps"]
    assert not compiled["ended_compiled"] and compiled["eager_epochs"]
    assert any("ran eagerly" in note for note in outcome.notes)


def test_an_unknown_compile_backend_is_one_sentence(tmp_path):
    with pytest.raises(fp.errors.ConfigError, match="compile_backend = 'nope' is not a torch"):
        run_experiment(["gin/quickstart.gin"], QUICK + ["experiment.compile = True",
                                                        "experiment.compile_backend = 'nope'"],
                       out=tmp_path / "n", quiet=True)


# --- resume on another device count -------------------------------------------------------------

def test_cuda_states_map_onto_the_devices_that_exist():
    saved = [f"s{i}" for i in range(8)]  # saved on an 8-GPU node, the run on device 3
    assert checkpoint.cuda_states(saved, 3, 1, 0) == [(0, "s3")]  # CUDA_VISIBLE_DEVICES=0
    assert checkpoint.cuda_states(saved, 3, 2, 1) == [(0, "s0"), (1, "s3")]
    assert checkpoint.cuda_states(saved[:1], 0, 4, 2) == [(0, "s0"), (2, "s0")]
    assert checkpoint.cuda_states(saved, None, 2, None) == [(0, "s0"), (1, "s1")]  # a CPU run
    assert checkpoint.cuda_states(saved, 3, 0, None) == []


def test_a_checkpoint_from_more_gpus_than_are_visible_restores(monkeypatch):
    """Built on the CPU: a checkpoint holding 8 CUDA generator states, restored where one device
    is visible, sets that device only, from the state of the device the run used."""
    state = checkpoint.rng_state()
    state["cuda"] = [torch.full((16,), i, dtype=torch.uint8) for i in range(8)]
    state["cuda_device"] = 5
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: pytest.fail("indexed all"))
    monkeypatch.setattr(torch.cuda, "set_rng_state",
                        lambda s, device: restored.append((device, int(s[0]))))
    checkpoint.set_rng_state(state, torch.device("cuda", 0))
    assert restored == [(0, 5)]
    torch.manual_seed(0)


def test_plugin_state_comes_back_on_the_models_device(tmp_path, manager):
    """Plugin state saved from the CPU is restored onto another device, the run's (here the meta
    device, the one other device a CPU has), and the tracking plugin computes with it there."""
    binds = QUICK + ["tracking.ema_batches = 4", "tracking.init_bias = 0.5"]
    outcome = run_experiment(["gin/quickstart.gin"], binds, out=tmp_path / "t", quiet=True,
                             manager=manager)
    ckpt = checkpoint.load(tmp_path / "t")
    tracking = ckpt["plugins"]["tracking"]
    assert tracking["ema"] and tracking["init"]
    settings = config.parse(["gin/quickstart.gin"], binds, manager)
    setup = build_setup(settings, manager, tmp_path / "t")
    run = setup.run
    run.device = torch.device("meta")
    checkpoint.restore(setup, run, ckpt)
    state = run.state["tracking"]
    tensors = [*state["ema"].values(), *state["init"].values()]
    assert tensors and all(t.is_meta for t in tensors)
    assert all(p.is_meta for p in run.model.parameters())
    from fp_builtins import tracking as plugin

    plugin.run_start(run)  # the settings, as a resumed run reads them
    weights = fp.nn.prunable_weights(run.model)
    for weight in weights.values():
        weight.grad = torch.ones_like(weight)
    plugin.after_step(run, run.step + 1, torch.zeros((), device=run.device))  # the EMA's lerp_
    scores = {n: torch.ones(w.shape[0], device=run.device) for n, w in weights.items()}
    event = PruneEvent(index=3, step=run.step, epoch=run.epoch, target=0.6,
                          granularity="filter")
    tracked = plugin.score(run, event, scores)
    assert tracked is not None and all(s.is_meta for s in tracked.values())
    assert event.info["tracking"]["tracked_scores"]
    assert outcome.summary["epochs"] == 3


# --- precision ----------------------------------------------------------------------------------

@pytest.fixture
def tf32_flags():
    saved = precision.tf32_flags()
    yield
    precision.restore(saved)


class PrecisionSpy(fp.Measure):
    """Records whether TF32 was allowed while it scored."""

    name = "precision_spy"
    seen: list = []

    def __call__(self, ctx):
        PrecisionSpy.seen.append(precision.tf32_enabled())
        return {n: ctx.grad()[n].abs() for n in ctx.weights}


def test_scoring_runs_in_full_fp32_whatever_training_allows(tf32_flags):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 3))
    batches = [(torch.randn(5, 3, 8, 8), torch.randint(0, 3, (5,)))]
    PrecisionSpy.seen = []
    precision.set_tf32(True)
    fp.score(model, PrecisionSpy, batches)
    assert PrecisionSpy.seen == [False] and precision.tf32_enabled()  # and restored after
    ctx = fp.ScoreContext(model, batches, tf32=True)  # a comparison may ask for TF32
    fp.score(model, PrecisionSpy, None, ctx=ctx)
    assert PrecisionSpy.seen == [False, True]
    precision.set_tf32(False)
    with precision.full_fp32():
        assert not precision.tf32_enabled()
    assert not precision.tf32_enabled()


@pytest.mark.parametrize("tf32", [True, False])
def test_experiment_tf32_sets_trainings_precision(tmp_path, manager, tf32_flags, tf32):
    precision.set_tf32(not tf32)
    settings = config.parse(["gin/quickstart.gin"], QUICK + [f"experiment.tf32 = {tf32}"], manager)
    build_setup(settings, manager, tmp_path / "p")
    assert precision.tf32_enabled() is tf32


def test_free_memory_counts_pytorchs_cached_blocks(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (3 << 30, 80 << 30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 10 << 30)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 6 << 30)
    assert free_memory(torch.device("cuda", 0)) == 7 << 30  # 3 free + 4 reserved, unallocated


# --- a distributed start --------------------------------------------------------------------------

RANK_SCRIPT = r"""
import json, os, sys, time
from pathlib import Path
import torch
import torch.distributed as dist
from fp.engine import checkpoint
from fp.engine.distributed import record_ranks
from fp.engine.experiment import run_experiment

rank, out, binds = int(os.environ["RANK"]), Path(sys.argv[1]), json.loads(sys.argv[2])
if rank == 1:  # looks for a checkpoint only once rank 0 has written its step-0 one
    original = checkpoint.load
    def late(out_dir):
        deadline = time.monotonic() + 30
        while not (Path(out_dir) / "checkpoints" / "last.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return original(out_dir)
    checkpoint.load = late
dist.init_process_group("gloo")
outcome = run_experiment(["gin/quickstart.gin"], binds, out=out, device="cpu", rank=rank,
                         world_size=2, quiet=True)
ranks = record_ranks(outcome.model, outcome.out_dir)
weights = [p for p in outcome.model.parameters() if p.dim() == 4]
layout = all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
(out.parent / f"rank{rank}.json").write_text(json.dumps(
    {"resumed": outcome.resumed, "channels_last": layout, "digest": ranks[rank]["digest"]}))
dist.barrier()
dist.destroy_process_group()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ranks_follow_rank_zeros_fresh_start_with_channels_last(tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    binds = QUICK + CHANNELS_LAST
    env = dict(os.environ, WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
               FP_DISABLE_PLUGIN_AUTOLOAD="1", OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "run"), json.dumps(binds)],
                              cwd=REPO, env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["resumed"] for r in ranks] == [False, False]
    assert all(r["channels_last"] for r in ranks) and ranks[0]["digest"] == ranks[1]["digest"]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["epoch"] for r in records if r["event"] == "epoch"] == [1, 2, 3]
