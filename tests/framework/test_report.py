"""``fp report``: seeds grouped per configuration, report.md / report.csv, and the figures."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from fp.errors import ConfigError
from fp.tools.report.document import report

QUICKSTART = str(Path(__file__).resolve().parents[2] / "gin" / "quickstart.gin")
FIGURES = ("accuracy_vs_kept.png", "curves.png", "prune_events.png", "layer_kept.png")
DENSE_WIDTHS = {"conv1.weight": 16, "layer2.conv.weight": 32, "layer10.conv.weight": 32, "fc.weight": 10}


def fake_run(folder: Path, *, measure="snip", seed=0, target=0.5, test_acc=0.8, flows=(),
             metrics=True, **summary) -> Path:
    """A run directory as fp run leaves it: summary.json and metrics.jsonl (2 epochs, 1 prune)."""
    folder.mkdir(parents=True)
    kept = {name: width if name == "fc.weight" else width // 2 for name, width in DENSE_WIDTHS.items()}
    base = {"test_acc": test_acc, "best_test_acc": test_acc + 0.05, "params": 400, "dense_params": 1000,
            "flops": 3000, "dense_flops": 10000, "filters_kept": 50, "dense_filters": 90,
            "wall_time_s": 10.0 + seed, "measure": measure, "architecture": "small_cnn",
            "dataset": "digits", "target": target, "target_type": "filters", "granularity": "filter",
            "schedule": "rounds", "rounds": 1, "epochs": 2, "seed": seed}
    (folder / "summary.json").write_text(json.dumps({**base, **summary}))
    if metrics:
        records = [{"event": "prune", "index": 1, "step": 5, "epoch": 0, "target": target,
                    "widths_before": DENSE_WIDTHS, "widths": kept},
                   *[{"event": "epoch", "epoch": e, "step": 10 * e, "train_acc": 0.5 + 0.1 * e,
                      "test_acc": 0.4 + 0.1 * e + 0.01 * seed, "test_loss": 2.0 - 0.5 * e}
                     for e in (1, 2)],
                   *flows]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def rows_of(out: Path) -> list[dict]:
    with (out / "report.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_seeds_of_one_configuration_make_one_row_with_mean_and_std(tmp_path):
    sweep_dir = tmp_path / "sweep"
    fake_run(sweep_dir / "a", seed=0, test_acc=0.8)
    fake_run(sweep_dir / "b", seed=1, test_acc=0.9)
    fake_run(sweep_dir / "c", measure="magnitude", test_acc=0.7)
    fake_run(sweep_dir / "d", measure="magnitude", target=0.7, test_acc=0.6)
    md = report([sweep_dir], tmp_path / "out")
    rows = rows_of(tmp_path / "out")
    assert [(r["measure"], r["target"], r["seeds"]) for r in rows] == [
        ("magnitude", "0.5", "1"), ("snip", "0.5", "2"), ("magnitude", "0.7", "1")]
    snip = rows[1]
    assert float(snip["test_acc_mean"]) == pytest.approx(85.0)
    assert float(snip["test_acc_std"]) == pytest.approx(7.0711, abs=1e-3)  # sample std, ddof=1
    assert float(snip["best_test_acc_mean"]) == pytest.approx(90.0)
    assert float(snip["params_kept_pct"]) == pytest.approx(40.0)
    assert float(snip["flops_kept_pct"]) == pytest.approx(30.0)
    assert float(snip["filters_kept_pct"]) == pytest.approx(100 * 50 / 90)
    assert float(snip["wall_time_s_mean"]) == pytest.approx(10.5)
    assert rows[0]["test_acc_std"] == ""  # one seed: no spread to report
    text = md.read_text()
    assert "| snip | small_cnn | digits | 0.5 | 85.00 ± 7.07 | 90.00 ± 7.07 | 40.0% | 30.0% | 55.6% | 10 s | 2 |" in text
    assert "| magnitude | small_cnn | digits | 0.7 | 60.00 |" in text


def test_every_table_with_test_accuracy_shows_the_best_epoch_beside_the_final_one(tmp_path):
    fake_run(tmp_path / "runs" / "a", measure="grasp", seed=0, test_acc=0.6)
    fake_run(tmp_path / "runs" / "b", measure="grasp", seed=1, test_acc=0.62)
    fake_run(tmp_path / "runs" / "c", measure="grad_norm", test_acc=0.8)
    md = report([tmp_path / "runs"], tmp_path / "out")
    text = md.read_text()
    assert "| final test acc (%) | best test acc (%) |" in text
    assert "| grasp | small_cnn | digits | 0.5 | 61.00 ± 1.41 | 66.00 ± 1.41 |" in text
    claims = (md.parent / "claims.md").read_text()
    # claim (iii)'s outcome compares final accuracies and shows the best beside them
    assert ("| measure | seeds | params kept | FLOPs kept | final test acc (%) | best test acc (%) |"
            in claims)
    assert "| grasp | 2 | 40.0% | 30.0% | 61 ± 1.4 | 66 ± 1.4 |" in claims
    assert "| grad_norm | 1 | 40.0% | 30.0% | 80 (1 seed) | 85 (1 seed) |" in claims

def test_the_figures_render_and_report_md_links_them_relatively(tmp_path):
    fake_run(tmp_path / "runs" / "a", seed=0)
    fake_run(tmp_path / "runs" / "b", seed=1, test_acc=0.85)
    fake_run(tmp_path / "runs" / "c", measure="grasp", test_acc=0.6)
    md = report([tmp_path / "runs"], tmp_path / "out")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md.read_text())
    assert links == list(FIGURES)
    for name in FIGURES:
        path = md.parent / name
        assert path.stat().st_size > 5_000
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width >= 400 and image.height >= 300


def test_flow_records_are_plotted_when_present(tmp_path):
    flows = [{"event": "flow", "index": 1, "step": 5, "grad_norm_sq_before": 4.0,
              "grad_norm_sq_after": 3.0, "loss_before": 1.2, "loss_after": 1.5,
              "predicted_loss_change": 0.25}]
    fake_run(tmp_path / "with_flow", flows=flows)
    with_flow = report([tmp_path / "with_flow"], tmp_path / "out_flow").parent / "prune_events.png"
    fake_run(tmp_path / "without_flow")
    without = report([tmp_path / "without_flow"], tmp_path / "out_plain").parent / "prune_events.png"
    # three panels (‖g‖², loss, predicted vs observed) against the fallback's two
    with Image.open(with_flow) as a, Image.open(without) as b:
        assert a.width > b.width


def test_flow_records_with_unexpected_keys_do_not_break_the_report(tmp_path):
    flows = [{"event": "flow", "step": 5, "layer_pruned_fraction": {"conv1.weight": 0.5}},
             {"event": "flow", "grad_norm_sq_before": "n/a"}]
    fake_run(tmp_path / "run", flows=flows)
    md = report([tmp_path / "run"], tmp_path / "out")
    assert (md.parent / "prune_events.png").stat().st_size > 5_000


def test_runs_without_metrics_still_report_and_skip_the_figures_they_cannot_draw(tmp_path):
    fake_run(tmp_path / "run", metrics=False)
    md = report([tmp_path / "run"], tmp_path / "out")
    text = md.read_text()
    assert "accuracy_vs_kept.png" in text
    assert "curves.png" not in text and "layer_kept.png" not in text
    assert not (md.parent / "curves.png").exists()


def test_a_cut_off_last_metrics_line_is_skipped(tmp_path):
    run = fake_run(tmp_path / "run")
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write('{"event": "epoch", "epoch": 3, "test_a')
    report([run], tmp_path / "out")
    assert len(rows_of(tmp_path / "out")) == 1


def test_a_run_given_twice_counts_once(tmp_path):
    run = fake_run(tmp_path / "sweep" / "a")
    report([tmp_path / "sweep", run], tmp_path / "out")
    assert rows_of(tmp_path / "out")[0]["seeds"] == "1"


def test_no_run_directories_is_a_config_error(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"no run directories \(with summary.json\) under"):
        report([tmp_path / "empty"], tmp_path / "out")
    with pytest.raises(ConfigError, match="missing does not exist"):
        report([tmp_path / "missing"], tmp_path / "out")
    (tmp_path / "notes.txt").write_text("a file")
    with pytest.raises(ConfigError, match="notes.txt is a file, not a directory"):
        report([tmp_path / "notes.txt"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_summary_json_that_is_not_json_names_the_file_and_the_line(tmp_path):
    run = fake_run(tmp_path / "runs" / "a")
    (run / "summary.json").write_text('{"measure": "snip",\n  "test_acc": 0.8,,\n}')
    before = listing(tmp_path / "runs")
    with pytest.raises(ConfigError, match=r"a/summary.json is not valid JSON \(line 2"):
        report([tmp_path / "runs"], tmp_path / "out")
    (run / "summary.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="summary.json does not hold a JSON object"):
        report([tmp_path / "runs"], tmp_path / "out")
    assert listing(tmp_path / "runs") == {**before, "a/summary.json": b"[1, 2]"}
    assert not (tmp_path / "out").exists()


def test_a_bad_metrics_line_before_the_last_names_the_file_and_the_line(tmp_path):
    run = fake_run(tmp_path / "run")
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run / "metrics.jsonl").write_text(lines[0] + "not json\n" + "".join(lines[1:]))
    before = listing(run)
    with pytest.raises(ConfigError, match=r"metrics.jsonl line 2 is not valid JSON"):
        report([run], tmp_path / "out")
    assert listing(run) == before and not (tmp_path / "out").exists()


def test_the_report_is_never_written_into_a_run_directory(tmp_path):
    run = fake_run(tmp_path / "run")
    before = listing(run)
    for out in (run, run / "report"):
        with pytest.raises(ConfigError, match="is inside the run directory"):
            report([run], out)
    (tmp_path / "taken").write_text("x")
    with pytest.raises(ConfigError, match="taken is a file, not a directory"):
        report([run], tmp_path / "taken")
    assert listing(run) == before


@pytest.mark.parametrize("case", ["missing", "file", "empty", "bad_summary", "bad_metrics"])
def test_fp_report_refuses_bad_input_with_one_sentence_and_a_non_zero_exit(tmp_path, capsys, case):
    from fp.cli import main

    run = fake_run(tmp_path / "sweep" / "a")
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    if case == "bad_summary":
        (run / "summary.json").write_text("{")
    if case == "bad_metrics":
        (run / "metrics.jsonl").write_text("{]\n{}\n")
    given = {"missing": tmp_path / "nowhere", "file": tmp_path / "file.txt",
             "empty": tmp_path / "empty"}.get(case, tmp_path / "sweep")
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(given), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err and len(err.strip().splitlines()) <= 2
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_report_of_a_real_run(tmp_path):
    from fp.engine import run_experiment

    outcome = run_experiment([QUICKSTART], ["train.epochs=2", "prune.rounds=1", "prune.samples=128"],
                  out=tmp_path / "runs" / "quick", quiet=True)
    md = report([tmp_path / "runs"], tmp_path / "out")
    row = rows_of(tmp_path / "out")[0]
    assert row["measure"] == "snip" and row["seeds"] == "1"
    assert float(row["test_acc_mean"]) == pytest.approx(100 * outcome.summary["test_acc"])
    for name in FIGURES:
        assert (md.parent / name).stat().st_size > 5_000
