"""``fp sweep``: grid expansion, stable run names, resuming, failures, the live table."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from fp.engine import Outcome
from fp.errors import ConfigError, FpError, RegistryError
from fp.tools.sweep import live_table, sweep
from fp.tools.sweep.grid import expand_grid, run_name

QUICKSTART = str(Path(__file__).resolve().parents[2] / "gin" / "quickstart.gin")


def test_bare_words_become_strings_and_literals_stay():
    assert expand_grid(["prune.measure=magnitude,snip"]) == [
        ["prune.measure='magnitude'"], ["prune.measure='snip'"]]
    assert expand_grid(["prune.target=0.5,\"x\",True,@fn,%MACRO,cuda:0"]) == [
        ["prune.target=0.5"], ['prune.target="x"'], ["prune.target=True"], ["prune.target=@fn"],
        ["prune.target=%MACRO"], ["prune.target='cuda:0'"]]


def test_tuples_are_not_split_on_their_inner_commas():
    assert expand_grid(["prune.protected=('fc',),(),('a', 'b')"]) == [
        ["prune.protected=('fc',)"], ["prune.protected=()"], ["prune.protected=('a', 'b')"]]


def test_the_grid_is_the_cartesian_product_in_argument_order():
    points = expand_grid(["prune.measure=snip,grasp", "experiment.seed=0,1,2"])
    assert len(points) == 6
    assert points[0] == ["prune.measure='snip'", "experiment.seed=0"]
    assert points[-1] == ["prune.measure='grasp'", "experiment.seed=2"]
    assert expand_grid([]) == [[]]


@pytest.mark.parametrize("arg", ["prune.measure", "prune.measure=", "prune.measure=a,,b",
                                 "prune.measure=snip,", "=snip", "measure=snip",
                                 "prune.protected=(1,2", "prune.measure='snip"])
def test_bad_grid_syntax_is_one_config_error_naming_the_argument(arg):
    with pytest.raises(ConfigError) as err:
        expand_grid([arg])
    assert repr(arg) in str(err.value)
    assert "\n" not in str(err.value)


def test_a_name_swept_twice_is_refused():
    with pytest.raises(ConfigError, match="twice"):
        expand_grid(["experiment.seed=0", "experiment.seed=1"])


def test_run_names_are_pinned():
    # these names locate finished runs on disk: a change here breaks resuming old sweeps
    assert run_name(["prune.measure='snip'", "experiment.seed=1"], "resnet56_snip") == \
        "resnet56_snip-measure=snip-seed=1-c676f12d"
    assert run_name(["prune.protected=('fc',)"], "quickstart") == "quickstart-protected=fc-2b8bdd3c"
    assert run_name([], "quickstart") == "quickstart-da39a3ee"


def test_the_hash_ignores_order_and_spacing_but_not_values():
    a = run_name(["experiment.seed=1", "prune.target=0.5"], "q")
    b = run_name(["prune.target = 0.50", "experiment.seed=1"], "q")
    assert a[-8:] == b[-8:]
    assert run_name(["experiment.seed=2", "prune.target=0.5"], "q")[-8:] != a[-8:]


def test_names_are_safe_for_file_systems_and_capped():
    name = run_name(["experiment.name='a b/c*?'"] + [f"x.y{i}={i}" for i in range(40)], "cfg")
    assert "/" not in name and " " not in name and "*" not in name and "?" not in name
    assert len(name) <= 80 + 9


class FakeEngine:
    """Stands in for fp.engine.run_experiment: records calls, writes summary.json, can fail on a value."""

    def __init__(self, fail_on: str | None = None):
        self.calls: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, files, bindings, *, out, device=None, quiet=False):
        self.calls.append(list(bindings))
        if self.fail_on and any(self.fail_on in b for b in bindings):
            raise FpError("the training loss became NaN in epoch 1.")
        summary = {"test_acc": 0.5, "best_test_acc": 0.6, "filters_kept": 75, "dense_filters": 100,
                   "wall_time_s": 2.0}
        Path(out).mkdir(parents=True)
        (Path(out) / "summary.json").write_text(json.dumps(summary))
        return Outcome(Path(out), summary)


def test_sweep_runs_every_point_into_its_named_directory(tmp_path):
    engine, seen = FakeEngine(), []
    rows = sweep(QUICKSTART, ["experiment.seed=0,1"], bindings=["train.epochs=1"], out=tmp_path,
                 runner=engine, on_update=lambda rows: seen.append([r["status"] for r in rows]))
    assert engine.calls == [["train.epochs=1", "experiment.seed=0"],
                            ["train.epochs=1", "experiment.seed=1"]]
    assert [r["status"] for r in rows] == ["done", "done"]
    assert rows[0]["name"] == run_name(["experiment.seed=0", "train.epochs=1"], "quickstart")
    assert (tmp_path / rows[1]["name"] / "summary.json").exists()
    assert rows[0]["filters_kept_frac"] == 0.75 and rows[0]["test_acc"] == 0.5
    assert rows[0]["bindings"] == ["experiment.seed=0"]
    assert seen[0] == ["queued", "queued"]
    assert ["running", "queued"] in seen and ["done", "running"] in seen
    assert seen[-1] == ["done", "done"]


def test_a_second_sweep_skips_finished_runs(tmp_path):
    sweep(QUICKSTART, ["experiment.seed=0,1"], out=tmp_path, runner=FakeEngine())
    engine = FakeEngine()
    rows = sweep(QUICKSTART, ["experiment.seed=0,1,2"], out=tmp_path, runner=engine)
    assert engine.calls == [["experiment.seed=2"]]
    assert [r["status"] for r in rows] == ["skipped (finished)"] * 2 + ["done"]
    assert rows[0]["best_test_acc"] == 0.6


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    engine = FakeEngine(fail_on="seed=0")
    rows = sweep(QUICKSTART, ["experiment.seed=0,1"], out=tmp_path, runner=engine)
    assert [r["status"] for r in rows] == ["failed", "done"]
    assert "NaN" in rows[0]["error"]
    assert len(engine.calls) == 2


def test_a_misspelt_grid_value_fails_before_any_run(tmp_path):
    engine = FakeEngine()
    with pytest.raises(RegistryError, match="did you mean 'snip'"):
        sweep(QUICKSTART, ["prune.measure=magnitude,snpi"], out=tmp_path, runner=engine)
    assert engine.calls == []


def test_binding_and_sweeping_the_same_name_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="both bound"):
        sweep(QUICKSTART, ["experiment.seed=0,1"], bindings=["experiment.seed=3"], out=tmp_path,
              runner=FakeEngine())


def test_the_live_table_shows_every_run_and_its_state(tmp_path):
    rows = sweep(QUICKSTART, ["experiment.seed=0,1"], out=tmp_path, runner=FakeEngine(fail_on="seed=1"))
    console = Console(record=True, width=200)
    console.print(live_table(rows))
    text = console.export_text()
    assert rows[0]["name"] in text and rows[1]["name"] in text
    assert "done" in text and "failed: the training loss became NaN" in text
    assert "50.00%" in text and "75.00%" in text


def test_error_messages_with_brackets_are_shown_verbatim():
    row = {"name": "q-1234abcd", "bindings": [], "status": "failed", "error": "bad [bold]x[/y]",
           "test_acc": None, "best_test_acc": None, "filters_kept_frac": None, "wall_time_s": None}
    console = Console(record=True, width=200)
    console.print(live_table([row]))
    assert "failed: bad [bold]x[/y]" in console.export_text()


@pytest.mark.slow
def test_a_real_sweep_runs_then_resumes_as_finished(tmp_path):
    grid, bind = ["prune.measure=magnitude"], ["train.epochs=2", "prune.rounds=1", "prune.samples=128"]
    rows = sweep(QUICKSTART, grid, bindings=bind, out=tmp_path)
    assert rows[0]["status"] == "done", rows[0]["error"]
    summary = json.loads((tmp_path / rows[0]["name"] / "summary.json").read_text())
    assert summary["measure"] == "magnitude" and summary["epochs"] == 2
    assert 0 <= rows[0]["test_acc"] <= 1 and rows[0]["filters_kept_frac"] == pytest.approx(0.5, abs=0.05)
    again = sweep(QUICKSTART, grid, bindings=bind, out=tmp_path)
    assert again[0]["status"] == "skipped (finished)"
    assert again[0]["test_acc"] == rows[0]["test_acc"]
