import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fp.errors import PruningError
from fp.pruning import channel_groups, filter_widths


def members_of(groups):
    return [set(g.members) for g in groups]


def test_residual_add_ties_the_branches_into_one_group(resnet, images):
    groups = channel_groups(resnet, images)
    stage1 = {"stem.conv.weight", "blocks.0.b.conv.weight", "blocks.1.b.conv.weight"}
    assert stage1 in members_of(groups)
    projected = {"blocks.2.shortcut.conv.weight", "blocks.2.b.conv.weight"}
    assert projected in members_of(groups)
    assert {"blocks.0.a.conv.weight"} in members_of(groups)


def test_every_prunable_weight_but_the_classifier_is_in_exactly_one_group(resnet, images):
    names = [n for g in channel_groups(resnet, images) for n in g.members]
    assert sorted(names) == sorted(n for n in filter_widths(resnet) if n != "fc.weight")


def test_classifier_is_found_from_the_graph_not_by_name(images):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 6, 3),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten())
    groups = channel_groups(model, images)
    assert members_of(groups) == [{"0.weight"}]


def test_protected_prefixes_keep_their_output_channels(resnet, images):
    groups = channel_groups(resnet, images, protected=("blocks.3", "blocks.0.a.conv.weight"))
    names = {n for g in groups for n in g.members}
    assert not any(n.startswith("blocks.3.") for n in names)
    assert "blocks.0.a.conv.weight" not in names and "blocks.1.a.conv.weight" in names


def test_depthwise_concat_and_grouped_convs(concat_net, images):
    groups = {g.root: g for g in channel_groups(concat_net, images)}
    expand = next(g for g in groups.values() if "expand.conv.weight" in g.members)
    assert set(expand.members) == {"expand.conv.weight", "dw.conv.weight"}
    assert expand.interleave == 1
    # the concat's consumer is not tied to the branches: each branch keeps its own group
    assert {"left.conv.weight"} in members_of(groups.values())
    assert {"right.conv.weight"} in members_of(groups.values())
    fuse = next(g for g in groups.values() if "fuse.conv.weight" in g.members)
    grouped = next(g for g in groups.values() if "grouped.conv.weight" in g.members)
    assert (fuse.interleave, fuse.slots) == (4, 6) and (grouped.interleave, grouped.slots) == (4, 6)
    assert fuse.slot_channels(1) == [1, 7, 13, 19]


def test_channel_score_is_the_mean_over_members(resnet, images):
    group = next(g for g in channel_groups(resnet, images) if "stem.conv.weight" in g.members)
    scores = {"stem.conv.weight": torch.arange(8.0), "blocks.0.b.conv.weight": torch.zeros(8),
              "blocks.1.b.conv.weight": torch.full((8,), 3.0), "fc.weight": torch.zeros(10)}
    assert torch.allclose(group.channel_scores(scores), (torch.arange(8.0) + 3) / 3)
    del scores["blocks.1.b.conv.weight"]  # unscored members are ignored, not counted as 0
    assert torch.allclose(group.channel_scores(scores), torch.arange(8.0) / 2)
    assert group.channel_scores({}) is None


def test_scores_of_the_wrong_length_or_with_nan_are_refused(resnet, images):
    group = next(g for g in channel_groups(resnet, images) if "stem.conv.weight" in g.members)
    with pytest.raises(PruningError, match="stem.conv.weight"):
        group.channel_scores({"stem.conv.weight": torch.zeros(5)})
    with pytest.raises(PruningError, match="NaN"):
        group.channel_scores({"stem.conv.weight": torch.full((8,), float("nan"))})


def test_tracing_keeps_the_train_flags(resnet, images):
    resnet.train()
    resnet.blocks[1].eval()
    channel_groups(resnet, images)
    assert resnet.training and resnet.stem.training and not resnet.blocks[1].training


class NoGradNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        with torch.no_grad():
            return self.conv(x).mean((2, 3))


class CrashingNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x.view(-1, 5))


@pytest.mark.parametrize("model", [NoGradNet(), CrashingNet()], ids=["no-grad", "crash"])
def test_a_model_that_cannot_be_traced_is_a_pruning_error(model, images):
    with pytest.raises(PruningError, match=type(model).__name__) as info:
        channel_groups(model, images)
    assert "\n" not in str(info.value)


def test_relu_of_a_classifier_sum_protects_both_heads(images):
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.a, self.b = nn.Conv2d(3, 8, 3), nn.Linear(8, 5), nn.Linear(8, 5)

        def forward(self, x):
            h = F.relu(self.body(x)).mean((2, 3))
            return F.relu(self.a(h) + self.b(h))

    assert members_of(channel_groups(TwoHeads(), images)) == [{"body.weight"}]
