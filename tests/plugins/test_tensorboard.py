import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import (DEFAULT_SIZE_GUIDANCE,
                                                                    EventAccumulator)
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

import fp
from fp.errors import ConfigError
from fp.run import PruneEvent
from fp_builtins import tensorboard as tb
from fp_builtins.tensorboard.hparams import (COMPARED, METRIC_TAGS, METRICS, SHOWN_BY_DEFAULT,
                                             hparam_values)
from fp_builtins.tensorboard.layout import CHARTS
from fp.tools.sweep.record import RECORD, folder_grid, record_sweep

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


def hparams_content(path):
    """The hparams plugin's three records of the event file(s) in ``path``, parsed."""
    content = read_events(path).PluginTagToContent("hparams")
    return {tag.removeprefix("_hparams_/"): plugin_data_pb2.HParamsPluginData.FromString(data)
            for tag, data in content.items()}


def shown_by_default(experiment):
    """The hparams TensorBoard 2.15-2.21's HParams table ticks: the backend sorts them by the
    ``differs`` flag, then by name, and the page ticks the first SHOWN_BY_DEFAULT."""
    infos = sorted(experiment.hparam_infos, key=lambda info: (not info.differs, info.name))
    return {info.name for info in infos[:SHOWN_BY_DEFAULT]}


def custom_scalars_layout(path):
    tensor = read_events(path).Tensors("custom_scalars__config__")[0].tensor_proto
    return layout_pb2.Layout.FromString(tensor.string_val[0])


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
    assert [c.title for c in custom_scalars_layout(tmp_path).category] == list(CHARTS)
    records = set(hparams_content(tmp_path))
    assert {"experiment", "session_start_info", "session_end_info"} <= records
    assert run.state[tb.STATE_KEY] is None and tb.writer_for(run) is None  # closed for good


def test_the_hparams_summary_holds_the_settings_and_the_final_metrics(tmp_path, manager):
    run = fake_run(tmp_path, manager)
    tb.run_start(run)
    started = hparams_content(tmp_path)  # the run has its row while it trains
    assert "session_end_info" not in started
    hparams = started["session_start_info"].session_start_info.hparams
    assert hparams["prune.measure"].string_value == "snip"
    assert hparams["train.lr"].number_value == pytest.approx(0.05)
    assert hparams["experiment.seed"].number_value == 3
    assert "prune.temperature" not in hparams
    tb.after_epoch(run, epoch=1, metrics=EPOCH_METRICS)
    tb.run_end(run, summary={})
    records = hparams_content(tmp_path)
    assert records["session_end_info"].session_end_info.status == api_pb2.STATUS_SUCCESS
    experiment = records["experiment"].experiment
    assert [(m.name.tag, m.display_name) for m in experiment.metric_infos] == list(METRICS.items())
    # TensorBoard ticks the hparams flagged `differs`: exactly the settings a comparison needs
    assert [(h.name, h.differs) for h in experiment.hparam_infos][:6] == [
        ("prune.measure", True), ("prune.target", True), ("model.architecture", True),
        ("data.dataset", True), ("experiment.seed", True), ("train.epochs", False)]
    assert shown_by_default(experiment) == set(COMPARED)
    logged = read_events(tmp_path).Tags()["scalars"]
    assert all(tag in logged for tag in METRIC_TAGS)  # the table reads its values from these


def test_the_keys_a_sweep_varies_come_first_among_the_default_columns(tmp_path, manager, bind):
    manager.registries  # the dataset plugins' gin names, so digits.size binds
    record_sweep(tmp_path, [["train.lr=0.05", "digits.size=8", "prune.measure='magnitude'"],
                            ["train.lr=0.1", "digits.size=16", "prune.measure='snip'"]])
    bind("digits.size = 16")
    run = fake_run(tmp_path / "point", manager)
    tb.run_start(run)
    records = hparams_content(run.out_dir)
    experiment = records["experiment"].experiment
    infos = {info.name: info for info in experiment.hparam_infos}
    assert [info.name for info in experiment.hparam_infos][:SHOWN_BY_DEFAULT] == [
        "train.lr", "digits.size", "prune.measure", "prune.target", "model.architecture"]
    assert shown_by_default(experiment) == {"train.lr", "digits.size", "prune.measure",
                                            "prune.target", "model.architecture"}
    assert not infos["experiment.seed"].differs  # five in all: the least telling one waits
    # the table's filters offer every value of the grid, not just this run's
    assert (infos["train.lr"].domain_interval.min_value,
            infos["train.lr"].domain_interval.max_value) == (0.05, 0.1)
    assert list(infos["prune.measure"].domain_discrete) == ["magnitude", "snip"]
    hparams = records["session_start_info"].session_start_info.hparams
    assert hparams["digits.size"].number_value == 16  # outside the settings blocks: from gin
    assert hparams["train.lr"].number_value == pytest.approx(0.05)  # the run's own config


def test_every_run_of_a_folder_flags_the_same_default_columns(tmp_path, manager):
    # TensorBoard shows the experiment summary of whichever run it reads first
    record_sweep(tmp_path, [["prune.target=0.3"], ["prune.target=0.6"]])
    flagged = []
    for name, measure in (("a", "snip"), ("b", "magnitude")):
        run = fake_run(tmp_path / name, manager)
        run.config = {**CONFIG, "prune": {**CONFIG["prune"], "measure": measure}}
        tb.run_start(run)
        experiment = hparams_content(run.out_dir)["experiment"].experiment
        flagged.append([info.name for info in experiment.hparam_infos if info.differs])
    swept_first = ["prune.target", *(name for name in COMPARED if name != "prune.target")]
    assert flagged[0] == flagged[1] == swept_first


def test_a_sweep_record_gathers_the_grids_of_every_sweep_into_the_folder(tmp_path):
    assert folder_grid(tmp_path / "run") == {}
    record_sweep(tmp_path, [["prune.measure='magnitude'"], ["prune.measure='snip'"]])
    record_sweep(tmp_path, [["prune.measure='snip'", "experiment.seed=1"]])
    assert folder_grid(tmp_path / "run") == {"prune.measure": ["'magnitude'", "'snip'"],
                                             "experiment.seed": ["1"]}
    (tmp_path / RECORD).write_text("{not json")
    with pytest.raises(ConfigError, match=RECORD):
        folder_grid(tmp_path / "run")


def test_fp_sweep_records_its_grid_before_its_first_run(tmp_path):
    from fp.engine import Outcome
    from fp.tools.sweep import sweep

    seen = []

    def runner(files, bindings, *, out, device=None, quiet=False):
        seen.append(folder_grid(out))
        return Outcome(out, {"test_acc": 0.5})

    sweep(str(QUICKSTART), ["prune.measure=magnitude,snip"], bindings=["train.epochs=1"],
          out=tmp_path, runner=runner)
    assert seen == [{"prune.measure": ["'magnitude'", "'snip'"]}] * 2


def test_the_custom_scalars_layout_puts_what_is_compared_on_one_chart(tmp_path, manager):
    tb.run_start(fake_run(tmp_path, manager))
    charts = {chart.title: list(chart.multiline.tag)
              for category in custom_scalars_layout(tmp_path).category for chart in category.chart}
    assert charts == {title: [f"^{tag}$" for tag in tags]
                      for category in CHARTS.values() for title, tags in category.items()}
    together = [set(tags) for category in CHARTS.values() for tags in category.values()]
    for pair in ({"flow/loss_before", "flow/loss_after"},
                 {"flow/loss_change", "flow/loss_change_predicted"},
                 {"flow/grad_norm_sq_before", "flow/grad_norm_sq_after"},
                 {"train/acc", "test/acc"}):
        assert pair in together


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
    charted = [regex for category in custom_scalars_layout(out).category
               for chart in category.chart for regex in chart.multiline.tag]
    unlogged = [r for r in charted if not any(re.match(r, tag) for tag in tags["scalars"])]
    assert not unlogged, f"Custom Scalars charts of tags no run logs: {unlogged}"
