"""The claims check of ``fp report``: per-measure mean ± std of each claim's quantity, and every
verdict (holds, does not hold, undetermined by overlap, undetermined by missing runs), on run
directories written by the test with known numbers."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fp.tools.report.claims import FAILS, HOLDS, UNDETERMINED, judge
from fp.tools.report.document import report
from fp.tools.report.records import group_runs, load_run

GIN = Path(__file__).resolve().parents[2] / "gin"


def write_run(folder: Path, measure: str, seed: int, *, loss_after=1.0, delta_l=0.1, gap=0.05,
              ratio=1.0, acc=0.8) -> Path:
    """Three prune events (steps 10, 20, 30), then epochs 4 and 5 with train loss
    ``loss_after`` ± 0.1; each prune flow record has |ΔL| = ``delta_l``, a first-order gap of
    ``gap`` and ‖g‖² after/before = ``ratio``."""
    folder.mkdir(parents=True)
    summary = {"measure": measure, "seed": seed, "test_acc": acc, "architecture": "vgg13",
               "dataset": "imagefolder", "target": 0.7, "rounds": 3, "epochs": 5}
    (folder / "summary.json").write_text(json.dumps(summary))
    records = []
    for index in (1, 2, 3):
        records.append({"event": "flow", "at": "prune", "index": index, "step": 10 * index,
                        "loss_before": 2.0, "loss_after": 2.0 + delta_l, "loss_change": delta_l,
                        "loss_change_predicted": delta_l - gap, "grad_norm_sq_before": 2.0,
                        "grad_norm_sq_after": 2.0 * ratio})
        records.append({"event": "prune", "index": index, "step": 10 * index, "target": 0.7})
        records.append({"event": "epoch", "epoch": index, "step": 10 * index, "train_loss": 9.0})
    for epoch, loss in ((4, loss_after - 0.1), (5, loss_after + 0.1)):
        records.append({"event": "epoch", "epoch": epoch, "step": 10 * epoch, "train_loss": loss})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def study(root: Path, spec: dict[str, list[dict]]) -> list:
    """Run directories for measure -> per-seed keyword values, and their judgements."""
    for measure, seeds in spec.items():
        for seed, values in enumerate(seeds):
            write_run(root / f"{measure}-{seed}", measure, seed, **values)
    configs = group_runs([load_run(p) for p in sorted(root.iterdir())])
    return {j.claim.tag: j for j in judge(configs)}


def seeds(key: str, *values: float) -> list[dict]:
    return [{key: v} for v in values]


def test_claim_i_holds_when_magnitude_is_lower_beyond_the_spread_and_its_stats_are_computed(tmp_path):
    judged = study(tmp_path, {"magnitude": seeds("loss_after", 1.0, 1.2),
                              "snip": seeds("loss_after", 2.0, 2.4),
                              "random": seeds("loss_after", 3.0, 3.0, 3.3)})
    claim = judged["i"]
    stats = claim.stats["post_prune_loss"]
    assert stats["magnitude"].mean == pytest.approx(1.1)            # epochs 4, 5 only
    assert stats["magnitude"].std == pytest.approx(0.141421, abs=1e-6)  # sample std of 1.0, 1.2
    assert stats["random"].mean == pytest.approx(3.1) and stats["random"].n == 3
    assert claim.verdict == HOLDS


def test_claim_i_does_not_hold_when_one_agnostic_measure_converges_faster(tmp_path):
    judged = study(tmp_path, {"magnitude": seeds("loss_after", 2.0, 2.2),
                              "snip": seeds("loss_after", 3.0, 3.2),
                              "grasp": seeds("loss_after", 1.0, 1.1)})
    assert judged["i"].verdict == FAILS
    assert "magnitude < grasp" in judged["i"].reason


def test_claim_i_is_undetermined_when_the_spreads_overlap(tmp_path):
    judged = study(tmp_path, {"magnitude": seeds("loss_after", 1.0, 1.6),
                              "snip": seeds("loss_after", 1.4, 1.9)})
    assert judged["i"].verdict == UNDETERMINED
    assert judged["i"].reason.startswith("spread overlaps")


def test_a_single_seed_or_an_absent_measure_makes_a_claim_undetermined_naming_it(tmp_path):
    judged = study(tmp_path, {"magnitude": seeds("loss_after", 1.0),
                              "snip": seeds("loss_after", 2.0, 2.1)})
    assert judged["i"].verdict == UNDETERMINED and "runs missing: magnitude" in judged["i"].reason
    assert judged["iii"].verdict == UNDETERMINED and "grasp, grad_norm" in judged["iii"].reason


def test_claim_ii_compares_the_measured_loss_change_and_reports_the_first_order_gap(tmp_path):
    judged = study(tmp_path, {"snip": [{"delta_l": 0.01, "gap": 0.02}, {"delta_l": 0.03, "gap": 0.04}],
                              "magnitude": seeds("delta_l", 0.5, 0.6),
                              "grad_norm": seeds("delta_l", 0.3, 0.3)})
    claim = judged["ii"]
    assert claim.stats["abs_loss_change"]["snip"].mean == pytest.approx(0.02)
    assert claim.stats["first_order_gap"]["snip"].mean == pytest.approx(0.03)
    assert claim.verdict == HOLDS
    judged = study(tmp_path / "b", {"snip": seeds("delta_l", 0.5, 0.52),
                                    "magnitude": seeds("delta_l", 0.1, 0.12)})
    assert judged["ii"].verdict == FAILS


def test_claim_iii_needs_grasp_to_raise_the_gradient_norm_and_end_less_accurate(tmp_path):
    holds = study(tmp_path / "a", {"grasp": [{"ratio": 3.0, "acc": 0.5}, {"ratio": 3.4, "acc": 0.52}],
                                   "grad_norm": [{"ratio": 1.0, "acc": 0.8}, {"ratio": 1.1, "acc": 0.81}]})
    assert holds["iii"].stats["grad_norm_ratio"]["grasp"].mean == pytest.approx(3.2)
    assert holds["iii"].stats["final_acc"]["grasp"].mean == pytest.approx(51.0)
    assert holds["iii"].verdict == HOLDS
    better = study(tmp_path / "b", {"grasp": [{"ratio": 3.0, "acc": 0.9}, {"ratio": 3.4, "acc": 0.91}],
                                    "grad_norm": [{"ratio": 1.0, "acc": 0.8}, {"ratio": 1.1, "acc": 0.81}]})
    assert better["iii"].verdict == FAILS
    close = study(tmp_path / "c", {"grasp": [{"ratio": 1.2, "acc": 0.5}, {"ratio": 1.9, "acc": 0.52}],
                                   "grad_norm": [{"ratio": 1.0, "acc": 0.8}, {"ratio": 1.5, "acc": 0.81}]})
    assert close["iii"].verdict == UNDETERMINED


def test_report_writes_claims_md_with_three_verdicts_and_the_figures(tmp_path):
    spec = {"magnitude": seeds("loss_after", 1.0, 1.2), "snip": seeds("loss_after", 2.0, 2.4),
            "random": seeds("loss_after", 3.0, 3.1)}
    for measure, values in spec.items():
        for seed, kw in enumerate(values):
            write_run(tmp_path / "runs" / f"{measure}-{seed}", measure, seed, **kw)
    md = report([tmp_path / "runs"], tmp_path / "out")
    claims = (md.parent / "claims.md").read_text()
    assert re.findall(r"\*\*Verdict \((i+)\): ([a-z ]+)\*\*", claims) == [
        ("i", "holds"), ("ii", "undetermined"), ("iii", "undetermined")]
    assert "| magnitude | 2 | 1.1 ± 0.14 |" in claims
    assert "| random | 2 | 3.05 ± 0.071 |" in claims
    assert "## Claims" in md.read_text() and "| (i) | holds |" in md.read_text()
    for name in ("claims_train_loss.png", "claims_grad_norm.png"):
        assert (md.parent / name).stat().st_size > 5_000 and f"({name})" in claims


@pytest.mark.slow
def test_claims_from_real_runs_on_digits(tmp_path):
    from fp.engine import run_experiment

    for measure in ("magnitude", "snip"):
        for seed in (0, 1):
            run_experiment([str(GIN / "quickstart.gin")],
                [f"prune.measure='{measure}'", f"experiment.seed={seed}", "train.epochs=3",
                 "prune.rounds=2", "prune.samples=128"],
                out=tmp_path / "runs" / f"{measure}-{seed}", quiet=True)
    md = report([tmp_path / "runs"], tmp_path / "out")
    claims = (md.parent / "claims.md").read_text()
    verdicts = re.findall(r"\*\*Verdict \((i+)\): (holds|does not hold|undetermined)\*\*", claims)
    assert [tag for tag, _ in verdicts] == ["i", "ii", "iii"]
    assert verdicts[2][1] == "undetermined"            # no grasp or grad_norm runs
    assert "| magnitude | 2 |" in claims and "| snip | 2 |" in claims
