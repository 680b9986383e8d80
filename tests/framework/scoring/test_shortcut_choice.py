"""The exact shortcuts a scoring computation takes: "off" none, "on" every one that applies, and
"auto" those that beat torch's own layer when timed on this machine, once per process and shape,
with rank 0 deciding for every rank. The clock is driven by the tests: each timed run advances it
by a cost the test sets, so every decision here is deterministic."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fp
from fp.config.settings import Prune
from fp.scoring import ScoreContext
from fp.scoring import shortcut_choice as shortcuts
from fp.scoring.layers.shortcuts import Shortcuts
from fp.scoring.shortcut_choice import decide

REAL_TIME = shortcuts._time  # taken before the conftest replaces it for every other test


class Net(nn.Module):
    """conv→BN at 8×8, conv→BN on a 2×2 map, a grouped conv, then a classifier."""

    def __init__(self):
        super().__init__()
        self.early, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.late, self.bn2 = nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.grouped = nn.Conv2d(16, 16, 1, groups=4)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        x = F.relu(self.bn1(self.early(x)))
        x = F.relu(self.bn2(self.late(F.max_pool2d(x, 4))))
        return self.fc(F.relu(self.grouped(x)).mean((2, 3)))


@pytest.fixture
def net():
    torch.manual_seed(0)
    return Net().eval()


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(1)
    return torch.randn(6, 3, 8, 8, generator=gen), torch.randint(0, 3, (6,), generator=gen)


class Costs:
    """A fake clock: every timed run advances it by the cost set for (shortcut, conv width,
    side), side "plain" or "shortcut", and the runs are counted."""

    def __init__(self, monkeypatch, costs: dict):
        self.now, self.costs, self.runs = 0.0, costs, []
        monkeypatch.setattr(shortcuts, "_time", REAL_TIME)
        monkeypatch.setattr(shortcuts, "synced_clock", lambda device: self.now)
        for kind in ("matmul", "fold"):
            real = getattr(shortcuts, f"_{kind}_runs")
            monkeypatch.setattr(shortcuts, f"_{kind}_runs",
                                lambda site, kind=kind, real=real: self.runs_for(kind, site, real))

    def runs_for(self, kind, site, real):
        real(site)  # the real runs are built (and so checked to build) but not run
        width = site.conv.out_channels

        def run(side):
            def advance():
                self.runs.append((kind, width, side))
                self.now += self.costs.get((kind, width, side), 1.0)
            return advance
        return shortcuts.Runs(run("plain"), run("shortcut"))


def test_off_takes_no_shortcut_and_on_every_one_that_applies(net, batch):
    none, info = decide(net, batch[0], "off")
    assert none == Shortcuts() and info["scoring_matmul"] == info["scoring_fold"] == []
    every, info = decide(net, batch[0], "on")
    assert every.fold == {"early", "late"}  # the grouped conv has no BatchNorm after it
    assert every.matmul == {"early", "late"}  # grouped: aten's kernel
    assert info["scoring_shortcuts"] == "on"


def test_auto_takes_a_shortcut_only_where_it_is_faster_by_the_margin(net, batch, monkeypatch):
    costs = Costs(monkeypatch, {("matmul", 16, "shortcut"): 0.5,      # late: the product wins
                                ("matmul", 8, "shortcut"): 0.98,      # early: within the margin
                                ("fold", 8, "shortcut"): 0.9,         # early: folding wins
                                ("fold", 16, "shortcut"): 2.0})       # late: folding loses
    chosen, info = decide(net, batch[0], "auto")
    assert chosen == Shortcuts(frozenset({"late"}), frozenset({"early"}))
    assert info["scoring_matmul"] == ["late"] and info["scoring_fold"] == ["early"]
    assert info["scoring_shortcuts_s"] > 0
    # the grouped convolution is never timed for the product; each side ran once untimed and
    # twice timed, alternating
    assert ("matmul", 16, "plain") in costs.runs and len(costs.runs) == 4 * 6
    assert costs.runs[:6] == [("matmul", 8, s) for s in
                              ("plain", "shortcut", "plain", "shortcut", "shortcut", "plain")]


def test_a_shape_is_timed_once_per_process_and_decided_again_from_its_timing(net, batch,
                                                                             monkeypatch):
    costs = Costs(monkeypatch, {("matmul", 16, "shortcut"): 0.5})
    first, _ = decide(net, batch[0], "auto")
    timed = len(costs.runs)
    second, info = decide(net, batch[0], "auto")
    assert second == first and len(costs.runs) == timed and info["scoring_shortcuts_s"] == 0
    decide(net, batch[0][:5], "auto")  # another batch size is another shape
    assert len(costs.runs) > timed


def test_a_hopeless_shortcut_is_not_timed_further(net, batch, monkeypatch):
    costs = Costs(monkeypatch, {("matmul", 8, "shortcut"): 10.0})
    decide(net, batch[0], "auto")
    assert [side for kind, width, side in costs.runs if (kind, width) == ("matmul", 8)] == [
        "plain", "shortcut"]
    key = next(k for k, t in shortcuts.TIMED.items() if k[0] == "matmul" and k[5][0] == 8)
    assert shortcuts.TIMED[key] == shortcuts.Timed(1.0, None, False)


def test_a_product_whose_unfolded_input_is_too_large_is_neither_timed_nor_taken(
        net, batch, monkeypatch):
    monkeypatch.setattr(shortcuts, "MAX_UNFOLDED_BYTES", 6 * 27 * 64 * 4 - 1)  # early's, less 1
    costs = Costs(monkeypatch, {("matmul", 8, "shortcut"): 0.1, ("matmul", 16, "shortcut"): 0.1})
    chosen, _ = decide(net, batch[0], "auto")
    assert chosen.matmul == {"late"}
    assert ("matmul", 8, "plain") not in costs.runs
    assert decide(net, batch[0], "on")[0].matmul == {"late"}


def test_another_rank_times_nothing_and_takes_rank_zeros_decision(net, batch, monkeypatch):
    costs = Costs(monkeypatch, {})
    rank_zeros = Shortcuts(frozenset({"early"}), frozenset({"late"}))
    monkeypatch.setattr(shortcuts, "is_rank_zero", lambda: False)
    monkeypatch.setattr(shortcuts, "as_on_rank_zero", lambda value: rank_zeros)
    chosen, info = decide(net, batch[0], "auto")
    assert chosen == rank_zeros and costs.runs == [] and info["scoring_shortcuts_s"] == 0


def test_the_real_runs_time_both_ways_and_decide(net, batch, monkeypatch):
    monkeypatch.setattr(shortcuts, "_time", REAL_TIME)
    for layout in (torch.contiguous_format, torch.channels_last):
        chosen, info = decide(net, batch[0].contiguous(memory_format=layout), "auto")
        assert set(info["scoring_matmul"]) <= {"early", "late"}
        assert set(info["scoring_fold"]) <= {"early", "late"}
    assert len(shortcuts.TIMED) == 8  # (matmul, fold) × (early, late) × two layouts
    assert all(t.plain_s > 0 for t in shortcuts.TIMED.values())


def test_a_context_names_its_decision_and_scores_alike_whatever_it_takes(net, batch,
                                                                         monkeypatch):
    Costs(monkeypatch, {("matmul", 16, "shortcut"): 0.5, ("fold", 8, "shortcut"): 0.5})
    model = net.double()
    batches = [(batch[0].double(), batch[1])]
    found = {}
    for mode in ("off", "auto", "on"):
        ctx = ScoreContext(model, batches, temperature=2.0, shortcuts=mode)
        found[mode] = ctx.grad(), ctx.filter_hess_grad()
        assert ctx.info["scoring_shortcuts"] == mode
    assert ctx.info["scoring_fold"] == ["early", "late"]
    for mode in ("auto", "on"):
        for have, want in zip(found[mode], found["off"]):
            for name in want:
                torch.testing.assert_close(have[name], want[name], rtol=1e-10, atol=1e-13)


class PaddedBySize(nn.Conv2d):
    """A convolution whose class pads by the input's size first (as timm's Conv2dSame)."""

    def forward(self, x):
        return super().forward(F.pad(x, (1, 1, 1, 1)))


def test_a_convolution_whose_class_has_its_own_forward_takes_no_shortcut(batch):
    model = nn.Sequential(PaddedBySize(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 3)).eval()
    chosen, _ = decide(model, batch[0], "on")
    assert chosen == Shortcuts()
    ctx = ScoreContext(model, [batch], shortcuts="on")
    expected = ScoreContext(model, [batch], shortcuts="off")
    for name, value in expected.grad().items():
        torch.testing.assert_close(ctx.grad()[name], value)


def test_a_run_takes_no_shortcut_unless_asked_and_an_unknown_mode_is_one_sentence():
    assert Prune().scoring_shortcuts == "off"
    with pytest.raises(fp.errors.ConfigError, match="scoring shortcuts 'fast' is not one of"):
        ScoreContext(nn.Linear(2, 2), None, shortcuts="fast")
