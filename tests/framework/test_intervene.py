"""Paired interventions (``fp intervene``): checkpoints kept at chosen epochs, one record per
(epoch, measure) pruning copies of the same weights, first-order predictions checked against
independent computations, and bad input refused in one sentence."""
from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from fp.cli import main
from fp.config.settings import Settings
from fp.engine import run_experiment
from fp.engine.rundir import kept_checkpoints
from fp.errors import ConfigError, DataError, FpError
from fp.nn import tempered_loss
from fp.tools.intervene import intervene, records, removal as rm, samples
from fp.tools.intervene.effects import gradient, mean_loss
from fp.tools.intervene.predictions import (predicted_removal, predicted_zeroing, probe_sources,
                                            surviving_before)

REPO = Path(__file__).parents[2]
FP = Path(sys.executable).with_name("fp")
DENSE = ["train.epochs = 2", "prune.target = 0.0", "prune.samples = 64", "digits.size = 8",
         "train.batch_size = 128", "flow.enabled = False", "prune.hvp_method = 'double_backward'"]
MEASURES = "magnitude,snip,biased_snip,grasp,grad_norm,random"


def fp_in_process(args: list[str]) -> None:
    """``fp`` in this process; typer ends a successful command with SystemExit(0)."""
    try:
        main(args)
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory) -> Path:
    """A tiny dense digits run that kept the checkpoints of both its epochs."""
    out = tmp_path_factory.mktemp("dense") / "seed0"
    run_experiment(["gin/quickstart.gin"], DENSE + ["experiment.keep_epochs = (1, 2)"], out=out,
                   quiet=True)
    return out


def test_keep_epochs_keeps_the_epoch_end_checkpoints(dense_run):
    kept = kept_checkpoints(dense_run)
    assert list(kept) == [1, 2]
    assert sorted(p.name for p in (dense_run / "checkpoints").iterdir()) == \
        ["epoch-1.pt", "epoch-2.pt", "last.pt"]
    first, last = (torch.load(kept[e], weights_only=True) for e in (1, 2))
    assert first["epoch"] == 1 and first["progress"]["batches"] == 0 and last["epoch"] == 2
    assert (dense_run / "checkpoints" / "last.pt").read_bytes() == kept[2].read_bytes()


@pytest.mark.parametrize("keep", ["(0,)", "(3,)", "(1, -2)"])
def test_keep_epochs_outside_the_run_are_refused(tmp_path, keep):
    with pytest.raises(ConfigError, match=r"experiment.keep_epochs = .* from 1 to 2"):
        run_experiment(["gin/quickstart.gin"], DENSE + [f"experiment.keep_epochs = {keep}"],
                       out=tmp_path / "r", quiet=True)


def test_intervene_writes_one_line_per_epoch_and_measure(dense_run, tmp_path, monkeypatch,
                                                          capsys):
    monkeypatch.setenv("FP_DISABLE_PLUGIN_AUTOLOAD", "1")
    args = ["intervene", str(dense_run), "--measures", MEASURES, "--fraction", "0.1",
            "--out", str(tmp_path), "--eval-samples", "100", "--device", "cpu"]
    fp_in_process(args)
    path = tmp_path / "interventions.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted((r["epoch"], r["measure"]) for r in lines) == \
        sorted((e, m) for e in (1, 2) for m in MEASURES.split(","))
    for epoch in (1, 2):
        same = [r for r in lines if r["epoch"] == epoch]
        # every measure pruned the same number of filters from the same weights, on the same sets
        assert len({r["filters_removed"] for r in same}) == 1 and same[0]["filters_removed"] == 30
        assert len({(r["loss_before"], r["theta_g_before"], r["samples_v"], r["samples_s"])
                    for r in same}) == 1
    record = lines[0]
    assert record["samples_v"] == 100 and record["samples_s"] == 60 and record["seed"] == 0
    assert record["run"] == "seed0" and record["architecture"] == "small_cnn"
    assert list(record["first_convs_removed"]) == ["features.0.weight", "features.4.weight"]
    # zeroing a filter leaves its BatchNorm's shift in the channel; removal takes it away too
    assert any(abs(r["loss_zeroed"] - r["loss_removed"]) > 1e-6 for r in lines)
    assert "snip" in capsys.readouterr().out
    before = path.read_bytes()
    fp_in_process(args)  # resumed: nothing left to measure
    assert path.read_bytes() == before


def test_the_evaluation_and_scoring_sets_are_balanced_and_disjoint():
    from fp_builtins.datasets.synthetic import Synthetic

    data = Synthetic(num_train=400, num_test=8, shape=(1, 4, 4), num_classes=4, augment=False)
    settings = Settings()
    settings.prune.samples, settings.prune.batch_size = 42, 16
    smallest = int(torch.bincount(data.splits["train"].labels).min())
    assert samples.evaluation_size(data, 10_000, 42) == 4 * (smallest - 10)  # room for S
    held = samples.evaluation_set(data, settings, 40, torch.device("cpu"))
    s = samples.scoring_batches(held, settings, 2, torch.device("cpu"))
    v_x, v_y = (torch.cat(t) for t in zip(*held.batches))
    s_x, s_y = (torch.cat(t) for t in zip(*s))
    assert torch.bincount(v_y).tolist() == [10] * 4 and torch.bincount(s_y).tolist() == [10] * 4
    assert not {tuple(row.tolist()) for row in v_x.flatten(1)} & \
        {tuple(row.tolist()) for row in s_x.flatten(1)}
    again = samples.scoring_batches(held, settings, 2, torch.device("cpu"))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(s, again))  # seeded: the same S
    settings.data.eval_samples = 20  # a run with its own V: that one, whatever --eval-samples says
    assert len(samples.evaluation_set(data, settings, 40, torch.device("cpu")).indices) == 20


def tiny_chain(relu_before_bn: bool = False) -> nn.Sequential:
    """conv-BN-ReLU-conv-BN-ReLU-pool-linear in float64 (conv-ReLU-BN first, as the paper's VGG,
    with ``relu_before_bn``), BatchNorms with non-trivial statistics and channel 1's shift large
    enough that k_1 > 0."""
    torch.manual_seed(0)
    first = [nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()]
    if relu_before_bn:
        first[1], first[2] = first[2], first[1]
    model = nn.Sequential(*first, nn.Conv2d(4, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)).double()
    with torch.no_grad():
        for bn in (m for m in model if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
            bn.bias[1] = 0.8
    return model.eval()


def tiny_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(n, 2, 5, 5, generator=gen, dtype=torch.float64),
             torch.randint(0, 2, (n,), generator=gen)) for n in (6, 3)]


def removal_of_channel_1(model: nn.Module, example: torch.Tensor) -> rm.Removal:
    scores = {"0.weight": torch.tensor([1.0, 0.0, 1.0, 1.0]), "3.weight": torch.ones(3),
              "8.weight": torch.ones(2)}
    return rm.remove(model, scores, 1 / 9, {}, example)  # 1 of the 9 dense filters


def test_removal_takes_the_lowest_filter_and_zeroing_matches_it():
    model, batches = tiny_chain(), tiny_batches()
    example = batches[0][0][:1]
    removal = removal_of_channel_1(model, example)
    assert {k: v.tolist() for k, v in removal.removed.items()} == {"0.weight": [1]}
    assert removal.model[0].out_channels == 3 and removal.model[3].in_channels == 3
    zeroed = rm.zeroed_copy(model, rm.zeroed_entries(model, removal, example))
    changed = {n for (n, p), q in zip(model.named_parameters(), zeroed.parameters())
               if not torch.equal(p, q)}
    assert changed == {"0.weight", "0.bias", "1.weight", "1.bias"}
    assert mean_loss(zeroed, batches, 2.0) == pytest.approx(mean_loss(removal.model, batches, 2.0),
                                                            rel=1e-12)


def test_the_zeroing_prediction_is_minus_theta_g_over_the_zeroed_entries():
    model, batches = tiny_chain(), tiny_batches()
    example = batches[0][0][:1]
    removal = removal_of_channel_1(model, example)
    x, y = (torch.cat(parts) for parts in zip(*batches))
    params = list(model.parameters())
    grads = torch.autograd.grad(tempered_loss(model(x), y, 2.0), params)
    # the filters' own θ: weight rows and biases; the BatchNorm after them keeps its shift
    entries = rm.zeroed_entries(model, removal, example, norms=False)
    assert set(entries) == {"0.weight", "0.bias"}
    zeroed = rm.zeroed_copy(model, entries)
    expected = -sum(float((p.detach() * g)[p != q].sum())
                    for p, g, q in zip(params, grads, zeroed.parameters()))
    dense = gradient(model, batches, 2.0, probe_sources(model, example))
    assert predicted_zeroing(model, dense, removal, example) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("relu_before_bn", [False, True])
def test_the_removal_prediction_is_the_derivative_of_a_scaled_removal(relu_before_bn):
    """L(ε): channel 1's weight row and bias scaled by 1 - ε and the input the next conv gets
    from it lowered by ε h_1 (h_1 = relu(k_1) after BN-ReLU, k_1 after ReLU-BN); L(1) is the
    removed model's loss and dL/dε(0) the first-order prediction."""
    model, batches = tiny_chain(relu_before_bn), tiny_batches()
    example = batches[0][0][:1]
    removal = removal_of_channel_1(model, example)
    bn = model[2] if relu_before_bn else model[1]
    k = bn.bias - bn.weight * bn.running_mean / torch.sqrt(bn.running_var + bn.eps)
    h = (k[1] if relu_before_bn else torch.relu(k[1])).item()
    assert h > 0.1

    def loss_at(eps: float) -> float:
        scaled = copy.deepcopy(model)
        with torch.no_grad():
            scaled[0].weight[1] *= 1 - eps
            scaled[0].bias[1] *= 1 - eps
        shift = torch.zeros(1, 4, 1, 1, dtype=torch.float64)
        shift[0, 1] = eps * h
        scaled[2].register_forward_hook(lambda m, i, out: out - shift)  # what the next conv reads
        return mean_loss(scaled, batches, 2.0)

    assert loss_at(1.0) == pytest.approx(mean_loss(removal.model, batches, 2.0), rel=1e-12)
    eps = 1e-5
    derivative = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    dense = gradient(model, batches, 2.0, probe_sources(model, example))
    predicted = predicted_removal(model, dense, removal, example)
    assert predicted == pytest.approx(derivative, rel=1e-6)
    assert predicted != pytest.approx(predicted_zeroing(model, dense, removal, example), rel=1e-3)


def test_the_surviving_gradient_norm_leaves_the_removed_entries_out():
    model, batches = tiny_chain(), tiny_batches()
    example = batches[0][0][:1]
    removal = removal_of_channel_1(model, example)
    kept = torch.tensor([0, 2, 3])
    grads = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    expected = {n: g for n, g in grads.items()}
    for name in ("0.weight", "0.bias", "1.weight", "1.bias"):
        expected[name] = grads[name][kept]
    expected["3.weight"] = grads["3.weight"][:, kept]
    total = sum(float(g.square().sum()) for g in expected.values())
    assert surviving_before(grads, removal) == pytest.approx(total, rel=1e-12)
    only_removed = {n: torch.zeros_like(g) for n, g in grads.items()}
    for name in ("0.weight", "0.bias", "1.weight", "1.bias"):
        only_removed[name][1] = 1.0
    only_removed["3.weight"][:, 1] = 1.0
    assert surviving_before(only_removed, removal) == 0.0
    pruned = dict(removal.model.named_parameters())
    assert {n: len(i) for n, i in removal.survivors.items()} == \
        {n: p.numel() for n, p in pruned.items()}


@pytest.mark.parametrize("kwargs, error", [
    ({"fraction": 0.0}, "--fraction 0 must lie strictly between 0 and 1"),
    ({"epochs": "1,3"}, "kept no checkpoint of epoch 3; it kept epochs 1, 2"),
    ({"epochs": "first"}, "--epochs 'first' must be comma-separated epoch numbers"),
    ({"measures": " , "}, "--measures names no measure"),
])
def test_bad_arguments_are_refused_before_any_work(dense_run, tmp_path, kwargs, error):
    args = {"measures": "snip", "fraction": 0.1, **kwargs}
    with pytest.raises(FpError, match=re.escape(error)):
        intervene([dense_run], args.pop("measures"), args.pop("fraction"), tmp_path, **args)
    assert not (tmp_path / "interventions.jsonl").exists()


def test_a_line_cut_short_by_a_crash_is_dropped_and_a_foreign_one_refused(tmp_path):
    good = {"run": "seed0", "seed": 0, "epoch": 1, "measure": "snip", "fraction": 0.1}
    path = tmp_path / records.FILE
    path.write_text(json.dumps(good) + "\n" + '{"run": "seed0", "se')
    assert records.read_records(tmp_path) == [good]
    assert path.read_text() == json.dumps(good) + "\n"  # appending starts on a line of its own
    path.write_text('{"run": "x"}\n' + json.dumps(good) + "\n")
    with pytest.raises(DataError, match="line 1, is not an intervention record"):
        records.read_records(tmp_path)


@pytest.mark.skipif(not FP.exists(), reason=f"no installed fp console script at {FP}")
def test_bad_input_is_one_sentence_through_the_console_script(dense_run, tmp_path,
                                                              installed_fp):
    bare = tmp_path / "no-kept"  # a dense run's directory without kept checkpoints
    bare.mkdir()
    (bare / "config.gin").write_text((dense_run / "config.gin").read_text())
    pruning = tmp_path / "pruning"
    pruning.mkdir()
    (pruning / "config.gin").write_text((dense_run / "config.gin").read_text()
                                        .replace("prune.target = 0.0", "prune.target = 0.5"))
    out = str(tmp_path / "out")
    cases = [([str(bare), "--measures", "snip", "--fraction", "0.1"], "kept no epoch checkpoints"),
             ([str(dense_run), "--measures", "snip,snap", "--fraction", "0.1"], "snap"),
             ([str(dense_run), "--measures", "snip", "--fraction", "1.5"], "--fraction 1.5"),
             ([str(pruning), "--measures", "snip", "--fraction", "0.1"], "not a dense run")]
    for args, needle in cases:
        result = installed_fp("intervene", *args, "--out", out)
        assert result.returncode != 0, (args, result.stdout, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and needle in lines[0], (args, result.stderr)
        assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "out" / "interventions.jsonl").exists()
