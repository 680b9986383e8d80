"""The claims check of ``fp report``, on run directories and interventions written by the test
with known numbers: each claim's primary comparison comes out supported for a clear effect, not
resolved without one, contradicted for a reversed one and "not resolved (runs missing)" when
runs are missing; claims.md shows the verdicts and links its figures."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from fp.errors import ConfigError
from fp.tools.report import paired
from fp.tools.report.claims.comparisons import p_text, verdict_line
from fp.tools.report.claims import interventions as lines
from fp.tools.report.claims.eval_set import EvalCurve
from fp.tools.report.claims.markdown import Inputs, judge
from fp.tools.report.claims.settings import settings_of
from fp.tools.report.document import report
from fp.tools.report.records import find_run_dirs, group_runs, load_run

GIN = Path(__file__).resolve().parents[2] / "gin"
SEEDS = range(5)
VERDICT = re.compile(r"\*\*Verdict \(([^)]+)\): ([a-z ()]+?)\*\*")


def write_run(folder: Path, measure: str, seed: int, *, after: float = 1.0, acc: float = 0.8,
              target_type: str = "filters", evals: bool = True, repeat: bool = False) -> Path:
    """A full run of 8 epochs of 10 steps with prune events after epochs 1, 2 and 3 (steps 10,
    20, 30, each before its epoch's end record). L_V is 1.5 just before each event, 2.5 just
    after, 2.0 at the ends of epochs 1-3, then ``after`` at the end of epoch 4, falling by 0.05
    an epoch. ``repeat`` writes epoch 4's records twice, as a resumed run does."""
    folder.mkdir(parents=True)
    summary = {"measure": measure, "seed": seed, "test_acc": acc, "best_test_acc": acc + 0.02,
               "params": 250 if measure == "magnitude" else 300, "dense_params": 1000,
               "flops": 400, "dense_flops": 1000, "filters_kept": 30, "dense_filters": 100,
               "architecture": "vgg13", "dataset": "cifar10", "target": 0.7,
               "target_type": target_type, "rounds": 3, "epochs": 8}
    (folder / "summary.json").write_text(json.dumps(summary))
    records = []
    for epoch in range(1, 9):
        step = 10 * epoch
        if epoch <= 3:
            records += [eval_set("before_prune", 1.5, step, index=epoch),
                        {"event": "prune", "index": epoch, "step": step, "epoch": epoch - 1},
                        eval_set("after_prune", 2.5, step, index=epoch)]
        loss = 2.0 if epoch <= 3 else after - 0.05 * (epoch - 4)
        records.append({"event": "epoch", "epoch": epoch, "step": step, "train_loss": 9.0})
        if evals:
            copies = 2 if repeat and epoch == 4 else 1
            records += [eval_set("epoch", loss, step, epoch=epoch)] * copies
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def eval_set(at: str, loss: float, step: int, **where) -> dict:
    return {"event": "eval_set", "at": at, "step": step, "loss": loss, "acc": 0.5,
            "grad_norm_sq": 1.0, "samples": 256, "temperature": 5.0, "epoch": 0, **where}


def runs(root: Path, measure: str, afters, **kw) -> None:
    for seed, after in zip(SEEDS, afters):
        write_run(root / f"{measure}-{kw.get('target_type', 'filters')}-{seed}", measure, seed,
                  after=after, **kw)


def intervention(measure: str, seed: int, epoch: int, *, change: float, log_ratio: float = 0.0,
                 own_t: float | None = None) -> dict:
    """One line of interventions.jsonl: |ΔL_V| = ``change`` on removal (0.8 of it on zeroing),
    predicted to first order as half of it."""
    return {"seed": seed, "epoch": epoch, "measure": measure, "fraction": 0.7,
            "loss_before": 1.0, "loss_zeroed": 1.0 + 0.8 * change, "loss_removed": 1.0 + change,
            "abs_change_zeroed": 0.8 * change, "abs_change_removed": change,
            "predicted_zeroed": 0.4 * change, "predicted_removed": 0.5 * change,
            "theta_g_rel_change": 0.1, "grad_norm_sq_before_measure_t": 1.0,
            "grad_norm_sq_after_measure_t": 2.0,
            "log_grad_ratio_measure_t": log_ratio if own_t is None else own_t,
            "grad_norm_sq_before_train_t": 1.0, "grad_norm_sq_after_train_t": 2.0,
            "log_grad_ratio_train_t": log_ratio,
            "first_convs_removed": {"features.0.weight": 0.6 if measure == "grasp" else 0.1},
            "architecture": "vgg13", "dataset": "cifar10", "run": f"runs/dense-{seed}"}


def write_interventions(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def judged(root: Path, interventions: Path | None = None) -> dict:
    configs = group_runs([load_run(p) for p in find_run_dirs([root])])
    files = lines.find(interventions, [root])
    return judge(Inputs(settings_of(configs), lines.load(files), files))


# --- claim (i) ------------------------------------------------------------------------------

def test_claim_i_is_supported_when_magnitude_s_L_V_after_the_last_prune_is_below_snip_s(tmp_path):
    runs(tmp_path, "magnitude", [1.0, 1.1, 0.9, 1.2, 1.0])
    runs(tmp_path, "snip", [1.5, 1.4, 1.6, 1.9, 1.3])
    [claim] = judged(tmp_path)["i"]
    primary = claim.primary.result
    assert (primary.low, primary.high, primary.n) == ("magnitude", "snip", 5)
    assert primary.mean == pytest.approx(0.5) and primary.p == pytest.approx(1 / 32)
    assert claim.verdict == paired.SUPPORTED
    # biased_snip is the secondary; without its runs it is missing, and says so
    assert claim.secondary[0].verdict == paired.MISSING
    assert claim.secondary[0].missing == "no biased_snip runs"


def test_claim_i_is_not_resolved_without_an_effect_and_contradicted_by_a_reversed_one(tmp_path):
    runs(tmp_path / "none", "magnitude", [1.0, 1.1, 0.9, 1.2, 1.0])
    runs(tmp_path / "none", "snip", [1.1, 1.0, 1.0, 1.1, 1.05])
    assert judged(tmp_path / "none")["i"][0].verdict == paired.NOT_RESOLVED
    runs(tmp_path / "reversed", "magnitude", [2.0, 2.1, 1.9, 2.2, 2.0])
    runs(tmp_path / "reversed", "snip", [1.0, 1.1, 0.9, 1.2, 1.0])
    [reversed_claim] = judged(tmp_path / "reversed")["i"]
    assert reversed_claim.verdict == paired.CONTRADICTED
    # what decided it is the reverse direction's p, which the table and the verdict line show
    primary = reversed_claim.primary.result
    assert (primary.p, primary.p_reverse) == (pytest.approx(1.0), pytest.approx(1 / 32))
    assert p_text(primary) == "1 (reverse 0.0312)"
    assert verdict_line(reversed_claim).endswith(
        "one-sided p = 1 (the reverse direction's: 0.0312), 5 paired seeds.")


def test_missing_runs_seeds_or_eval_records_make_claim_i_not_resolved_naming_them(tmp_path):
    runs(tmp_path / "absent", "snip", [1.0] * 5)
    claim = judged(tmp_path / "absent")["i"][0]
    assert claim.verdict == paired.MISSING and claim.primary.missing == "no magnitude runs"
    write_run(tmp_path / "one" / "m", "magnitude", 0)
    write_run(tmp_path / "one" / "s0", "snip", 0)
    write_run(tmp_path / "one" / "s1", "snip", 1)
    assert judged(tmp_path / "one")["i"][0].primary.missing.startswith("1 seed(s) pair, 2 needed")
    runs(tmp_path / "no_evals", "magnitude", [1.0] * 5, evals=False)
    runs(tmp_path / "no_evals", "snip", [2.0] * 5)
    assert judged(tmp_path / "no_evals")["i"][0].primary.missing == (
        "magnitude runs without L_V 1 epoch after the last prune")


def test_L_V_counts_whole_epochs_after_the_last_prune_and_censors_a_late_recovery(tmp_path):
    curve = EvalCurve.of(load_run(write_run(tmp_path / "a", "snip", 0, after=1.4, repeat=True)))
    # the event at step 30 precedes epoch 3's end record (same step): +1 is epoch 4's end
    assert curve.after_last_prune(1) == pytest.approx(1.4)
    assert curve.after_last_prune(3) == pytest.approx(1.3)
    assert curve.since_last_prune()[0] == pytest.approx(2.5)   # just after the event
    assert curve.recovery().epochs == 3                       # epochs 2, 3 at 2.0; epoch 4 at 1.4
    late = EvalCurve.of(load_run(write_run(tmp_path / "b", "snip", 0, after=1.8))).recovery()
    assert late.censored and late.text() == ">7 (censored)"


def test_the_capacity_matched_arm_is_a_setting_of_its_own(tmp_path):
    runs(tmp_path, "magnitude", [1.0, 1.1, 0.9, 1.2, 1.0])
    runs(tmp_path, "snip", [1.5, 1.4, 1.6, 1.9, 1.3])
    runs(tmp_path, "magnitude", [1.0] * 5, target_type="params")
    claims = judged(tmp_path)["i"]
    assert [c.verdict for c in claims] == [paired.SUPPORTED, paired.MISSING]
    assert "capacity-matched arm" in claims[1].scope and "target_type params" in claims[1].scope


def test_dense_runs_form_no_setting(tmp_path):
    """The interventions' checkpoint runs (target 0) are not full runs of any measure."""
    runs(tmp_path, "magnitude", [1.0, 1.1, 0.9, 1.2, 1.0])
    runs(tmp_path, "snip", [1.5, 1.4, 1.6, 1.9, 1.3])
    dense = write_run(tmp_path / "dense", "magnitude", 0)
    summary = json.loads((dense / "summary.json").read_text())
    (dense / "summary.json").write_text(json.dumps({**summary, "target": 0.0}))
    assert [c.verdict for c in judged(tmp_path)["i"]] == [paired.SUPPORTED]


# --- claims (ii) and (iii) from interventions ------------------------------------------------

def first_order_rows(snip: list[float], magnitude: list[float], others=("grasp",)) -> list[dict]:
    """Checkpoints at epochs 1 and 20: at epoch 1 the given |ΔL_V|; at 20 every measure 0.1."""
    rows = []
    for seed in SEEDS:
        rows += [intervention("snip", seed, 1, change=snip[seed]),
                 intervention("magnitude", seed, 1, change=magnitude[seed]),
                 *(intervention(m, seed, 1, change=0.3) for m in others),
                 *(intervention(m, seed, 20, change=0.1) for m in ("snip", "magnitude", *others))]
    return rows


@pytest.mark.parametrize("snip, magnitude, expected", [
    ([0.01, 0.02, 0.01, 0.03, 0.02], [0.5, 0.6, 0.4, 0.7, 0.5], paired.SUPPORTED),
    ([0.5, 0.4, 0.6, 0.5, 0.55], [0.45, 0.5, 0.5, 0.55, 0.5], paired.NOT_RESOLVED),
    ([0.5, 0.6, 0.4, 0.7, 0.5], [0.01, 0.02, 0.01, 0.03, 0.02], paired.CONTRADICTED)])
def test_claim_ii_compares_snip_s_loss_change_with_magnitude_s_at_the_earliest_checkpoint(
        tmp_path, snip, magnitude, expected):
    write_run(tmp_path / "runs" / "a", "snip", 0)
    path = write_interventions(tmp_path / "runs" / "interventions.jsonl",
                               first_order_rows(snip, magnitude))
    [claim] = judged(tmp_path / "runs")["ii"]
    assert claim.primary.result.quantity == "|ΔL_V| removed at epoch 1"
    assert claim.verdict == expected
    trend = claim.secondary[-1].result
    assert (trend.low, trend.high) == ("epoch 20", "epoch 1")
    # |ΔL − ΔL̂|: the measured change against the first-order prediction
    assert lines.value(lines.load([path])[0].rows[0], "gap_removed") == pytest.approx(0.5 * snip[0])


def test_claim_ii_without_magnitude_or_without_interventions_is_missing(tmp_path):
    write_run(tmp_path / "runs" / "a", "snip", 0)
    assert judged(tmp_path / "runs")["ii"][0].verdict == paired.MISSING
    assert "no interventions.jsonl" in judged(tmp_path / "runs")["ii"][0].primary.missing
    rows = [r for r in first_order_rows([0.01] * 5, [0.5] * 5) if r["measure"] != "magnitude"]
    path = write_interventions(tmp_path / "elsewhere" / "interventions.jsonl", rows)
    claim = judged(tmp_path / "runs", path.parent)["ii"][0]
    assert claim.verdict == paired.MISSING and claim.primary.missing == "no magnitude interventions"


def test_claim_iii_judges_the_mechanism_and_the_outcome_separately(tmp_path):
    rows = [intervention(m, seed, 1, change=0.1, log_ratio=ratio + 0.01 * seed)
            for seed in SEEDS for m, ratio in (("grasp", 0.8), ("grad_norm", -0.1))]
    write_interventions(tmp_path / "interventions.jsonl", rows)
    runs(tmp_path, "grasp", [1.0] * 5, acc=0.85)         # grasp ends *more* accurate
    runs(tmp_path, "grad_norm", [1.0] * 5, acc=0.80)
    mechanism, outcome = judged(tmp_path)["iii"]
    assert mechanism.tag == "iii, mechanism" and mechanism.verdict == paired.SUPPORTED
    assert mechanism.primary.result.mean == pytest.approx(0.9)
    assert outcome.tag == "iii, outcome" and outcome.verdict == paired.CONTRADICTED
    assert outcome.primary.result.mean == pytest.approx(-5.0)     # percentage points


def test_holm_over_the_secondaries_states_the_floor_of_five_seeds(tmp_path):
    rows = first_order_rows([0.01] * 5, [0.5, 0.6, 0.4, 0.7, 0.5], others=("grasp", "random"))
    write_interventions(tmp_path / "interventions.jsonl", rows)
    write_run(tmp_path / "a", "snip", 0)
    claim = judged(tmp_path)["ii"][0]
    # three secondaries (grasp, random, the trend), each with p = 1/32 alone: Holm gives 3/32
    assert [c.result.p_adjusted for c in claim.secondary] == pytest.approx([3 / 32] * 3)
    assert all(c.verdict == paired.NOT_RESOLVED for c in claim.secondary)
    text = (report([tmp_path], tmp_path / "out").parent / "claims.md").read_text()
    assert "needs n ≥ 6 pairs; none has" in text


# --- claims.md and report.md ------------------------------------------------------------------

def test_report_writes_claims_md_with_every_verdict_the_tables_and_the_figures(tmp_path):
    root = tmp_path / "sweep"
    runs(root, "magnitude", [1.0, 1.1, 0.9, 1.2, 1.0], acc=0.85)
    runs(root, "snip", [1.5, 1.4, 1.6, 1.9, 1.3], acc=0.84)
    runs(root, "grasp", [1.8] * 5, acc=0.70)
    runs(root, "grad_norm", [1.7] * 5, acc=0.80)
    rows = first_order_rows([0.01] * 5, [0.5, 0.6, 0.4, 0.7, 0.5])
    write_interventions(root / "dense" / "interventions.jsonl", rows)   # found in a subfolder
    md = report([root], tmp_path / "out")
    claims = (md.parent / "claims.md").read_text()
    assert VERDICT.findall(claims) == [("i", "supported"), ("ii", "supported"),
                                       ("iii, mechanism", paired.MISSING),   # no grad_norm
                                       ("iii, outcome", "supported")]
    assert "| magnitude | 5 | 25.0% | 40.0% | 1.04 ± 0.11 |" in claims   # params, FLOPs kept
    assert ("| primary | magnitude < snip | L_V 1 epoch after the last prune | 5 | 0.5 | "
            "[0.2517, 0.7483] | 0.0312 | – | supported | 25.0% / 30.0% | 40.0% / 40.0% |") in claims
    assert claims.count("What this test cannot show:") == 3
    for name in ("claims_eval_loss.png", "claims_interventions.png"):
        assert f"]({name})" in claims and (md.parent / name).stat().st_size > 5_000
        with Image.open(md.parent / name) as image:
            assert image.format == "PNG" and image.width >= 600
    text = md.read_text()
    assert "## Claims" in text and "| (iii, outcome) |" in text and "| supported |" in text


def test_interventions_given_by_file_and_bad_ones_refused_before_anything_is_written(tmp_path):
    from fp.cli import main

    runs_dir = write_run(tmp_path / "runs" / "a", "snip", 0).parent
    rows = first_order_rows([0.01] * 5, [0.5] * 5)
    path = write_interventions(tmp_path / "iv" / "interventions.jsonl", rows)
    with pytest.raises(SystemExit) as done:
        main(["report", str(runs_dir), "--interventions", str(path), "--out", str(tmp_path / "out")])
    assert done.value.code == 0
    assert "| (ii) |" in (tmp_path / "out" / "report.md").read_text()
    with pytest.raises(ConfigError, match="no interventions.jsonl there"):
        report([runs_dir], tmp_path / "out2", interventions=tmp_path / "nowhere")
    broken = write_interventions(tmp_path / "bad" / "interventions.jsonl",
                                 [{"epoch": 1, "measure": "snip"}, {}])
    with pytest.raises(ConfigError, match="a line without seed"):
        report([runs_dir], tmp_path / "out2", interventions=broken)
    # two dense studies in one file: the same seed cannot pair with both
    other = [{**row, "run": "other-study"} for row in rows[:1]]
    mixed = write_interventions(tmp_path / "mixed" / "interventions.jsonl", rows + other)
    with pytest.raises(ConfigError, match="dense runs runs/dense-0 and other-study both give seed 0"):
        report([runs_dir], tmp_path / "out2", interventions=mixed)
    assert not (tmp_path / "out2").exists()


@pytest.mark.slow
def test_claims_from_real_runs_on_digits(tmp_path):
    from fp.engine import run_experiment

    for measure in ("magnitude", "snip"):
        for seed in (0, 1):
            run_experiment([str(GIN / "quickstart.gin")],
                [f"prune.measure='{measure}'", f"experiment.seed={seed}", "train.epochs=3",
                 "prune.rounds=2", "prune.samples=128", "data.eval_samples=128"],
                out=tmp_path / "runs" / f"{measure}-{seed}", quiet=True)
    md = report([tmp_path / "runs"], tmp_path / "out")
    claims = (md.parent / "claims.md").read_text()
    verdicts = dict(VERDICT.findall(claims))
    assert list(verdicts) == ["i", "ii", "iii, mechanism", "iii, outcome"]
    assert verdicts["ii"] == paired.MISSING                  # no interventions
    assert "| magnitude | 2 |" in claims and "| snip | 2 |" in claims
