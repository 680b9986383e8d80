from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import (DEFAULT_SIZE_GUIDANCE,
                                                                    EventAccumulator)
from tensorboard.plugins.hparams import plugin_data_pb2

import fp
from fp.errors import ConfigError
from fp_builtins import tensorboard as tb
from fp_builtins.tensorboard.hparams import METRIC_TAGS, hparam_values
from fp.run import PruneEvent

QUICKSTART = Path(__file__).resolve().parents[2] / "gin" / "quickstart.gin"
CONFIG = {
    "train": {"epochs": 2, "lr": 0.05, "milestones": (0.5, 0.75), "nesterov": False},
    "prune": {"measure": "snip", "target": 0.5, "temperature": None},
    "data": {"dataset": "digits"}, "model": {"architecture": "small_cnn"},
    "experiment": {"seed": 3, "device": "cpu"},
}
EPOCH_METRICS = {"train_loss": 1.5, "train_acc": 0.4, "lr": 0.05, "test_loss": 1.2, "test_acc": 0.6,
                 "best_test_acc": 0.6, "params": 1000, "flops": 5000, "filters_kept": 30,
                 "params_frac": 0.5, "flops_frac": 0.25, "filters_kept_frac": 0.75}


def fake_run(out_dir, manager, *, step=0, resumed=False, rank=0):
    return SimpleNamespace(out_dir=Path(out_dir), manager=manager, is_main=rank == 0, state={},
                           step=step, epoch=0, resumed=resumed, config=CONFIG)


def read_events(path):
    accumulator = EventAccumulator(str(path), size_guidance={k: 0 for k in DEFAULT_SIZE_GUIDANCE})
    accumulator.Reload()
    return accumulator


def scalars(events, tag):
    return {e.step: e.value for e in events.Scalars(tag)}


def prune_event(step):
    event = PruneEvent(index=1, step=step, epoch=1, target=0.5, granularity="filter")
    event.widths_before = {"conv.weight": 8, "fc.weight": 10}
    event.widths_after = {"conv.weight": 3, "fc.weight": 10}
    event.scores = {"conv.weight": torch.arange(8.0), "fc.weight": torch.full((10,), 20.0)}
    return event


def test_a_run_writes_every_section_into_one_event_file_in_the_run_dir(tmp_path, manager, bind):
    bind("tensorboard.log_every = 5")
    run = fake_run(tmp_path, manager)
    tb.run_start(run)
    for step in range(1, 11):
        run.step = step
        tb.after_step(run, step=step, loss=torch.tensor(float(step)))
    tb.after_prune(run, prune_event(step=10))
    tb.after_epoch(run, epoch=1, metrics=EPOCH_METRICS)
    tb.run_end(run, summary={"test_acc": 0.6})

    assert [p.name.startswith("events.out.tfevents") for p in tmp_path.iterdir()] == [True]
    events = read_events(tmp_path)
    assert scalars(events, "train/batch_loss") == {5: 5.0, 10: 10.0}
    for key, tag in tb.EPOCH_TAGS.items():
        assert scalars(events, tag) == {10: pytest.approx(EPOCH_METRICS[key])}
    assert scalars(events, "layer/conv/width") == {10: 3.0}
    assert scalars(events, "prune/target") == {10: 0.5}
    histogram = events.Histograms("prune/scores/all")[0].histogram_value
    assert (histogram.num, histogram.min, histogram.max) == (18, 0.0, 20.0)
    assert events.Histograms("prune/scores/conv")[0].histogram_value.num == 8
    text = events.Tensors("config/operative/text_summary")[0].tensor_proto.string_val[0].decode()
    assert text.startswith("```") and "tensorboard.log_every = 5" in text
    assert run.state[tb.STATE_KEY] is None and tb.writer_for(run) is None  # closed for good


def test_the_hparams_summary_holds_the_settings_and_the_final_metrics(tmp_path, manager):
    run = fake_run(tmp_path, manager)
    tb.after_epoch(run, epoch=1, metrics=EPOCH_METRICS)
    tb.run_end(run, summary={})
    content = read_events(tmp_path).PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["prune.measure"].string_value == "snip"
    assert hparams["train.lr"].number_value == pytest.approx(0.05)
    assert hparams["experiment.seed"].number_value == 3
    assert "prune.temperature" not in hparams
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    assert [m.name.tag for m in experiment.experiment.metric_infos] == list(METRIC_TAGS)
    # the five columns TensorBoard shows by default are the ones every comparison needs
    assert [h.name for h in experiment.experiment.hparam_infos][:5] == [
        "prune.measure", "prune.target", "model.architecture", "data.dataset", "experiment.seed"]
    logged = read_events(tmp_path).Tags()["scalars"]
    assert all(tag in logged for tag in METRIC_TAGS)  # the table reads its values from these


def test_hparam_values_keep_numbers_and_write_the_rest_as_text():
    values = hparam_values(CONFIG)
    assert values["train.epochs"] == 2 and values["prune.target"] == 0.5
    assert values["train.milestones"] == "(0.5, 0.75)" and values["train.nesterov"] == "False"
    assert "prune.temperature" not in values and "experiment.device" not in values


def test_a_resumed_run_drops_what_was_logged_after_its_checkpoint(tmp_path, manager):
    first = fake_run(tmp_path, manager)
    for step in range(1, 9):  # the checkpoint was saved at step 4; the process died at step 8
        tb.writer_for(first).add_scalar("train/batch_loss", float(step), step)
    tb.writer_for(first).close()
    resumed = fake_run(tmp_path, manager, step=4, resumed=True)
    for step in range(5, 7):
        tb.writer_for(resumed).add_scalar("train/batch_loss", 10.0 * step, step)
    tb.run_end(resumed, summary={})
    assert scalars(read_events(tmp_path), "train/batch_loss") == {
        1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0, 5: 50.0, 6: 60.0}


def test_nothing_is_written_when_disabled_on_other_ranks_or_when_blocked(tmp_path, manager,
                                                                         bind, monkeypatch):
    assert tb.writer_for(fake_run(tmp_path / "rank1", manager, rank=1)) is None
    monkeypatch.setenv("FP_BLOCK_PLUGINS", "tensorboard")
    assert tb.writer_for(fake_run(tmp_path / "blocked", fp.make_manager(autoload=False))) is None
    bind("tensorboard.enabled = False")
    run = fake_run(tmp_path / "off", manager)
    tb.run_start(run)
    tb.after_step(run, step=50, loss=torch.tensor(1.0))
    tb.after_prune(run, prune_event(step=50))
    tb.after_epoch(run, epoch=1, metrics=EPOCH_METRICS)
    tb.run_end(run, summary={})
    assert tb.writer_for(run) is None
    assert not any(p.exists() for p in (tmp_path / "rank1", tmp_path / "blocked", tmp_path / "off"))


def test_a_negative_or_fractional_log_every_is_a_config_error(bind):
    bind("tensorboard.log_every = -1")
    with pytest.raises(ConfigError, match="tensorboard.log_every"):
        tb.tensorboard()
    with pytest.raises(ConfigError, match="tensorboard.log_every"):
        tb.tensorboard(log_every=2.5)


@pytest.mark.slow
def test_an_engine_run_can_be_read_back_with_tensorboard(tmp_path):
    from fp.engine import run_experiment

    out = tmp_path / "r"
    bindings = ["train.epochs=2", "prune.rounds=1", "prune.samples=128", "tensorboard.log_every=10"]
    run_experiment([str(QUICKSTART)], bindings, out=out, quiet=True, manager=fp.make_manager(autoload=False))
    events = read_events(out)
    tags = events.Tags()
    steps = max(scalars(events, "train/loss"))
    assert set(scalars(events, "train/loss")) == {steps // 2, steps}
    assert len(scalars(events, "train/batch_loss")) == steps // 10
    assert all(0.0 <= v <= 1.0 for v in scalars(events, "test/acc").values())
    assert scalars(events, "model/filters_kept_frac")[steps] == pytest.approx(0.5, abs=0.01)
    widths = [t for t in tags["scalars"] if t.startswith("layer/") and t.endswith("/width")]
    assert widths and "prune/scores/all" in tags["histograms"]
    assert {"flow/norm_sq_total", "flow/loss_before", "flow/grad_norm_sq_after",
            "flow/rank_spearman/magnitude", "flow/norm_flow_pearson"} <= set(tags["scalars"])
    assert "config/operative/text_summary" in tags["tensors"]
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
