"""No model makes pruning fail with anything but one clear sentence, and no prune event leaves a
layer without channels: channels that one layer feeds twice go together (GhostNet), a layer that
covers part of a group keeps a channel of its own, groups through a channel split are left
alone, and failures in scoring, analysis and surgery are PruningErrors naming the module."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fp
from fp.errors import PruningError
from fp.pruning import channel_groups, dense_stats, prune_filters
from fp.pruning.surgery import prune_and_run
from fp.pruning.trace import MAX_SECONDS


def conv_widths(model: nn.Module) -> dict[str, tuple[int, int]]:
    return {name: (m.out_channels, m.in_channels) for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d)}


class Ghost(nn.Module):
    """GhostNet's ghost module: ``cat([x1, depthwise(x1)])``, so channel j of ``primary`` is
    channel j and channel j + width/2 of the output."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.primary = nn.Sequential(nn.Conv2d(cin, cout // 2, 1, bias=False),
                                     nn.BatchNorm2d(cout // 2))
        self.cheap = nn.Sequential(nn.Conv2d(cout // 2, cout // 2, 3, padding=1,
                                             groups=cout // 2, bias=False),
                                   nn.BatchNorm2d(cout // 2))

    def forward(self, x):
        x1 = self.primary(x)
        return torch.cat([x1, self.cheap(x1)], 1)


class GatedGhost(nn.Module):
    """A ghost module gated by a 16-channel conv (GhostNetV2's attention): the gate's group
    holds both halves of the concatenation."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.ghost = Ghost(8, 16)
        self.gate = nn.Conv2d(8, 16, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.stem(x))
        y = self.ghost(x) * torch.sigmoid(self.gate(x))
        return self.fc(y.mean((2, 3)))


def ghost_scores(model: nn.Module) -> dict[str, torch.Tensor]:
    """Adversarial: the gate's second half (the ghost's cheap copies) and the ghost's own layers
    score lowest, so a selection blind to the tie takes every channel of ``primary``."""
    gate = torch.cat([torch.full((8,), 10.0), torch.zeros(8)])
    return {"stem.weight": torch.full((8,), 100.0), "gate.weight": gate,
            "ghost.primary.0.weight": torch.zeros(8), "ghost.cheap.0.weight": torch.zeros(8),
            "fc.weight": torch.ones(10)}


def test_channels_one_layer_feeds_twice_are_one_slot():
    groups = channel_groups(GatedGhost(), torch.randn(1, 3, 8, 8))
    gate = next(g for g in groups if "gate.weight" in g.members)
    assert set(gate.members) == {"gate.weight", "ghost.primary.0.weight", "ghost.cheap.0.weight"}
    assert (gate.interleave, gate.slots) == (2, 8)
    assert gate.slot_channels(3) == [3, 11]


def test_a_ghost_module_keeps_channels_whatever_the_scores():
    torch.manual_seed(0)
    model, x = GatedGhost(), torch.randn(2, 3, 8, 8)
    result = prune_filters(model, ghost_scores(model), 0.6, example_inputs=x,
                           dense=dense_stats(model, x))
    widths = conv_widths(model)
    assert all(out > 0 and inp > 0 for out, inp in widths.values()), widths
    assert widths["ghost.primary.0"][0] < 8  # it was pruned, not spared
    removed = set(result.removed["gate.weight"].tolist())
    assert removed and all((c + 8) % 16 in removed for c in removed)  # whole slots
    model(x).sum().backward()


class Halves(nn.Module):
    """``cat([a(x), b(x)]) + wide(x)``: a and b each cover half of the wide layer's group."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.wide = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1), nn.Conv2d(3, 8, 1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        y = F.relu(torch.cat([self.a(x), self.b(x)], 1) + self.wide(x))
        return self.fc(y.mean((2, 3)))


def test_a_layer_that_covers_part_of_a_group_keeps_a_channel():
    model, x = Halves(), torch.randn(2, 3, 8, 8)
    scores = {"a.weight": torch.zeros(4), "b.weight": torch.ones(4),
              "wide.weight": torch.cat([torch.zeros(4), torch.ones(4)])}
    # 26 filters (the classifier's 10 count, though they never go): 10 to remove, 2 a slot
    prune_filters(model, scores, 0.4, example_inputs=x, dense=dense_stats(model, x))
    assert model.a.out_channels == 1  # at most 0.95 of its 4 channels: 3 go, 1 stays
    assert model.b.out_channels == 2 and model.wide.out_channels == 3
    model(x).sum().backward()


class Split(nn.Module):
    """``split(conv(x), 4)``: the forward splits by a size fixed in its code."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.left, self.right = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        a, b = self.conv(x).split(4, 1)
        return self.fc(torch.cat([self.left(a), self.right(b)], 1).mean((2, 3)))


def test_a_group_through_a_channel_split_is_left_unpruned():
    model, x = Split(), torch.randn(4, 3, 8, 8)
    names = {n for g in channel_groups(model, x[:1]) for n in g.members}
    assert names == {"left.weight", "right.weight"}
    fp.prune(model, "magnitude", [(x, torch.arange(4))], 0.2)
    assert model.conv.out_channels == 8 and model.left.out_channels + model.right.out_channels < 8
    model(x).sum().backward()


def test_surgery_that_would_empty_a_layer_is_refused_naming_it(resnet, images):
    groups = channel_groups(resnet, images[:1])
    index = next(i for i, g in enumerate(groups) if set(g.members) == {"blocks.0.a.conv.weight"})
    with pytest.raises(PruningError, match=r"'blocks\.0\.a\.conv' \(Conv2d\) with no channels"):
        prune_and_run(resnet, groups, {index: list(range(groups[index].width))}, images[:1])


class Fragile(nn.Module):
    """Fails on any forward that records gradients, as scoring's does."""

    def forward(self, x):
        if torch.is_grad_enabled():
            raise RuntimeError("boom")
        return x


def test_a_forward_that_fails_while_scoring_is_one_sentence_naming_the_module():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), Fragile(), nn.Flatten(), nn.LazyLinear(10))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        model(x)  # materialise the lazy layer
    with pytest.raises(PruningError, match=r"scoring it with snip failed in '1' \(Fragile\) "
                                           r"\(RuntimeError: boom\)"):
        fp.prune(model, "snip", [(x, torch.arange(2))], 0.3)


def test_a_measure_that_raises_is_one_sentence():
    class Broken(fp.Measure):
        name = "broken_for_test"

        def __call__(self, ctx):
            raise ValueError("no scores today")

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(144, 10))
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(PruningError, match=r"scoring it with broken_for_test failed "
                                           r"\(ValueError: no scores today\)"):
        fp.prune(model, Broken(), [(x, torch.arange(2))], 0.3)


# --- timm's models, built directly (fp.build_model's timm family is tested elsewhere) ---------


def timm_model(name: str, **kwargs) -> nn.Module:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=10, **kwargs)


@pytest.mark.slow
def test_ghostnetv2_prunes_with_snip():
    """The case that ended in a 0-channel conv: GhostNetV2's ghost modules tie channel j and
    j + C/2 of each concatenation (see ``test_a_ghost_module_keeps_channels...``)."""
    model = timm_model("ghostnetv2_100")
    x, y = torch.randn(4, 3, 64, 64), torch.arange(4)
    before = sum(p.numel() for p in model.parameters())
    fp.prune(model, "snip", [(x, y)], 0.3)
    assert sum(p.numel() for p in model.parameters()) < before
    assert all(out > 0 and inp > 0 for out, inp in conv_widths(model).values())
    model.train()
    model(x).sum().backward()


def test_rexnets_in_place_slice_add_is_refused_fast():
    """RexNet adds its shortcut into a slice of channels in place; torch-pruning's grouping of
    that never settles. The refusal comes from the group-size bound, long before the clock."""
    model = timm_model("rexnet_100")
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(PruningError, match=r"budget \(a group of more than .*"
                                           r"in '(features|stem)\..*' \(\w+\)"):
        fp.prune(model, "magnitude", [(x, torch.arange(2))], 0.3)
    assert MAX_SECONDS >= 30  # the clock is the last resort; this test passes well before it
