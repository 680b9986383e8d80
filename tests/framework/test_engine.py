"""The run loop end to end on tiny digits runs: hooks, outputs, resume, refusal, faults."""
import json
import types

import pytest
import torch

import fp
from fp.engine import run_experiment
from fp.pruning import sparsity
from fp.errors import ConfigError, FpError, PluginError

QUICK = ["train.epochs = 2", "prune.rounds = 1", "prune.target = 0.5", "prune.samples = 64",
         "digits.size = 8", "train.batch_size = 128", "flow.enabled = False"]


def quick(tmp_path, *extra, name="r", manager=None, **kw):
    return run_experiment(["gin/quickstart.gin"], QUICK + list(extra), out=tmp_path / name, quiet=True,
               manager=manager, **kw)


class Recorder:
    """A test plugin that records every lifecycle hook it sees."""

    __name__ = "recorder"

    def __init__(self):
        self.calls = []

    @fp.hookimpl
    def run_start(self, run):
        self.calls.append("run_start")

    @fp.hookimpl
    def before_prune(self, run, event):
        self.calls.append("before_prune")

    @fp.hookimpl
    def score(self, run, event, scores):
        self.calls.append("score")

    @fp.hookimpl
    def after_prune(self, run, event):
        self.calls.append("after_prune")

    @fp.hookimpl
    def after_step(self, run, step, loss):
        self.calls.append("after_step")

    @fp.hookimpl
    def after_epoch(self, run, epoch, metrics):
        self.calls.append(f"after_epoch{epoch}")

    @fp.hookimpl
    def run_end(self, run, summary):
        self.calls.append("run_end")


def test_hooks_fire_in_order(tmp_path):
    rec = Recorder()
    outcome = quick(tmp_path, manager=fp.make_manager(autoload=False, plugins=(rec,)))
    steps = outcome.summary["steps"] // 2  # steps per epoch
    first_epoch = ["after_step"] * steps
    assert rec.calls == (["run_start"] + first_epoch + ["before_prune", "score", "after_prune",
                         "after_epoch1"] + ["after_step"] * steps + ["after_epoch2", "run_end"])


def test_run_directory_holds_the_promised_files(tmp_path):
    outcome = quick(tmp_path)
    out = outcome.out_dir
    for name in ["operative_config.gin", "summary.json", "metrics.jsonl", "model.pt"]:
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    for key in ["test_acc", "best_test_acc", "params", "dense_params", "flops", "dense_flops",
                "filters_kept", "dense_filters", "epochs", "wall_time_s", "measure", "world_size"]:
        assert key in summary, key
    assert summary["filters_kept"] == pytest.approx(summary["dense_filters"] / 2, abs=4)
    assert summary["params"] < summary["dense_params"] and summary["flops"] < summary["dense_flops"]
    assert "prune.measure = 'snip'" in (out / "operative_config.gin").read_text()
    events = [json.loads(line)["event"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert events.count("epoch") == 2 and events.count("prune") == 1
    model = fp.load(out / "model.pt")
    assert fp.pruning.count_params(model) == summary["params"]


def test_finished_run_is_not_redone_and_other_config_is_refused(tmp_path):
    first = quick(tmp_path)
    again = quick(tmp_path)
    assert again.already_finished and again.summary == first.summary
    with pytest.raises(ConfigError, match="different config"):
        quick(tmp_path, "train.lr = 0.01")
    assert (first.out_dir / "model.pt").exists()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    class Poison:
        __name__ = "poison"

        @fp.hookimpl
        def after_step(self, run, step, loss):
            if step == 2:
                with torch.no_grad():
                    next(run.model.parameters()).fill_(float("nan"))

    pm = fp.make_manager(autoload=False, plugins=(Poison(),))
    with pytest.raises(FpError, match="NaN or infinite"):
        quick(tmp_path, manager=pm)
    ckpt = torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 0 and ckpt["step"] == 0
    assert not (tmp_path / "r" / "summary.json").exists()


def test_exception_in_a_plugin_hook_names_the_plugin(tmp_path):
    class Faulty:
        __name__ = "faulty_logger"

        @fp.hookimpl
        def after_epoch(self, run, epoch, metrics):
            raise KeyError("test_accuracy")

    pm = fp.make_manager(autoload=False, plugins=(Faulty(),))
    with pytest.raises(PluginError, match="faulty_logger.*after_epoch.*KeyError"):
        quick(tmp_path, manager=pm)


def test_bf16_autocast_and_channels_last_train_on_cpu(tmp_path):
    outcome = quick(tmp_path, "experiment.amp = True", "experiment.channels_last = True",
                    "train.batch_size = 32")
    assert outcome.summary["test_acc"] > 0.4  # it learns, in bf16, after surgery on channels_last
    assert outcome.summary["filters_kept"] < outcome.summary["dense_filters"]


@pytest.mark.slow
def test_torch_compile_flag_trains(tmp_path):
    args = ("train.epochs = 1", "prune.rounds = 1")
    compiled = quick(tmp_path, "experiment.compile = True", *args, name="compiled").summary
    eager = quick(tmp_path, *args, name="eager").summary
    assert compiled["epochs"] == 1 and compiled["filters_kept"] == eager["filters_kept"]
    assert compiled["train_loss"] == pytest.approx(eager["train_loss"], rel=1e-2)  # same maths, fused


class TypedState:
    """Reads the run's typed state where plugins find it."""

    __name__ = "typed_state"

    def __init__(self):
        self.seen = {}

    @fp.hookimpl
    def run_start(self, run):
        self.seen["config"] = run.config == run.settings.as_dict()
        self.seen["private_keys"] = sorted(k for k in run.state if k in ("_metrics_writer",
                                                                         "_scoring_batches"))
        self.seen["writer"] = run.metrics_writer is not None

    @fp.hookimpl
    def after_prune(self, run, event):
        self.seen["masks_on_model"] = run.masks is run.model.fp_masks
        self.seen["scoring_batches"] = len(run.scoring_batches(event.index)) > 0


def test_weight_granularity_keeps_masked_weights_zero(tmp_path):
    typed = TypedState()
    outcome = quick(tmp_path, "prune.granularity = 'weight'", "prune.measure = 'magnitude'",
                    manager=fp.make_manager(autoload=False, plugins=(typed,)))
    assert typed.seen == {"config": True, "private_keys": [], "writer": True,
                          "masks_on_model": True, "scoring_batches": True}
    assert sparsity(outcome.model, outcome.model.fp_masks) == outcome.summary["sparsity"]
    assert fp.load(outcome.out_dir / "model.pt").fp_masks.keys() == outcome.model.fp_masks.keys()
    s = outcome.summary
    assert s["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert s["params"] == s["dense_params"]  # masks, not surgery
    weights = [p for p in outcome.model.parameters() if p.dim() > 1]  # conv and linear weights
    zeros = sum(int((p == 0).sum()) for p in weights)
    assert zeros / sum(p.numel() for p in weights) == pytest.approx(0.5, abs=0.02)


def test_iterative_magnitude_pruning_rewinds_and_retrains(tmp_path):
    outcome = quick(tmp_path, "prune.granularity = 'weight'", "prune.measure = 'magnitude'",
                    "prune.schedule = 'imp'", "train.epochs = 1", "prune.rounds = 2")
    s = outcome.summary
    assert s["epochs"] == 3 and s["prune_events"] == 2  # 2 cycles of 1 epoch, then the final one
    assert s["sparsity"] == pytest.approx(0.5, abs=0.01)
    records = [json.loads(line) for line in (outcome.out_dir / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in records if r["event"] == "epoch"]
    assert lrs[0] == lrs[1] == lrs[2]  # the LR schedule restarts with each rewound cycle


def test_every_prune_record_counts_the_model_it_left(tmp_path):
    outcome = quick(tmp_path, "prune.rounds = 2", "train.epochs = 3")
    records = [json.loads(line) for line in (outcome.out_dir / "metrics.jsonl").open()]
    prunes = [r for r in records if r["event"] == "prune"]
    assert len(prunes) == 2
    for record in prunes:
        assert record["filters_kept"] == sum(record["widths"].values())
    assert prunes[1]["params"] < prunes[0]["params"] and prunes[1]["flops"] < prunes[0]["flops"]
    assert prunes[-1]["params"] == outcome.summary["params"]
