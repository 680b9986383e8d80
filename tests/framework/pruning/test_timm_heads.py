"""timm's attention loses whole heads as torchvision's does: ViT/DeiT ``Attention`` (with or
without q/k norms), Swin's ``WindowAttention`` and the hybrid MobileViT, scored by the group rule
(a head is the mean of its q, k and v rows); attention modules whose forward derives the head
width from the input width, or that hold a norm over all heads, keep their heads."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import fp
from fp.pruning import channel_groups, prune_event
from fp.pruning.heads import attention_modules, prunable_heads, remove_heads

timm = pytest.importorskip("timm")
from timm.layers import Attention  # noqa: E402
from timm.models.swin_transformer import SwinTransformer  # noqa: E402
from timm.models.vision_transformer import VisionTransformer  # noqa: E402

from .test_transformers import silenced  # noqa: E402

MEASURES = ["magnitude", "snip", "grasp", "taylor", "grad_norm", "synflow", "random"]


def small_vit(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4,
                             num_classes=10, **kwargs)


def small_swin() -> nn.Module:
    torch.manual_seed(0)
    return SwinTransformer(img_size=32, patch_size=4, embed_dim=32, depths=(2, 2),
                           num_heads=(2, 4), window_size=4, num_classes=10)


def batch(size: int = 32, n: int = 8):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, size, size, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def heads_of(model: nn.Module) -> list[nn.Module]:
    return list(attention_modules(model))


def assert_heads_consistent(model: nn.Module) -> None:
    """Every attention module's head count and widths match its layers' shapes."""
    for module in heads_of(model):
        inner = module.num_heads * module.head_dim
        assert module.qkv.out_features == 3 * inner and module.proj.in_features == inner
        if hasattr(module, "attn_dim"):
            assert module.attn_dim == inner
        table = getattr(module, "relative_position_bias_table", None)
        if table is not None:
            assert table.shape[-1] == module.num_heads


def test_timm_heads_are_slots_of_their_q_k_v_rows():
    groups = channel_groups(small_vit(), batch()[0][:1])
    heads = [g for g in groups if g.root.endswith("attn.qkv.weight")]
    assert len(heads) == 2 and all((g.slots, g.interleave, g.width) == (4, 48, 192) for g in heads)
    rows = heads[0].members[heads[0].root]
    assert sorted(rows[heads[0].slot_channels(1)].tolist()) == \
        [part * 64 + 16 + d for part in range(3) for d in range(16)]
    scores = {heads[0].root: torch.arange(192.0)}
    expected = [float(torch.arange(192.0)[rows[heads[0].slot_channels(h)]].mean())
                for h in range(4)]
    assert heads[0].slot_scores(scores).tolist() == pytest.approx(expected)


@pytest.mark.parametrize("build", [small_vit, lambda: small_vit(qk_norm=True), small_swin],
                         ids=["vit", "vit-qk-norm", "swin"])
def test_removing_timm_heads_computes_what_silencing_them_does(build):
    model, x = build().eval(), batch()[0]
    assert all(prunable_heads(m) for m in heads_of(model))
    heads = [[0, 1][:m.num_heads - 1] for m in heads_of(model)]
    reference = silenced(model, heads)
    for module, gone in zip(heads_of(model), heads):
        remove_heads(module, gone)
    assert_heads_consistent(model)
    torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("measure", MEASURES)
def test_every_measure_scores_timm_heads_and_prune_removes_some(measure):
    """timm's attention runs fused (scaled_dot_product_attention), which has no double backward;
    a prune event scores it unfused, so grasp and grad_norm score it too."""
    model, (x, y) = small_vit(qk_norm=True), batch()
    dense = copy.deepcopy(model)  # the groups' layers keep their widths
    heads = [g for g in channel_groups(dense, x[:1]) if g.root.endswith("qkv.weight")]
    _, record = prune_event(model, measure, [(x, y)], 0.5)  # more than the MLPs can give
    assert len(heads) == 2
    assert all(torch.isfinite(g.slot_scores(record.scores)).all() for g in heads)
    assert all(m.fused_attn == timm.layers.use_fused_attn() for m in heads_of(model))
    assert sum(m.num_heads for m in heads_of(model)) < 8
    assert_heads_consistent(model)
    assert model.patch_embed.proj.out_channels == 64  # the embedding stays
    model.train()(x).sum().backward()


def test_timm_swin_prunes_heads_and_their_position_bias():
    model, (x, y) = small_swin(), batch()
    fp.prune(model, "magnitude", [(x, y)], 0.5)
    assert sum(m.num_heads for m in heads_of(model)) < 12
    assert_heads_consistent(model)
    model.train()(x).sum().backward()


class NormedHeads(nn.Module):
    """A timm Attention with a norm over all heads' outputs (``scale_norm``)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(12, 32)
        self.attn = Attention(32, num_heads=4, scale_norm=True, norm_layer=nn.LayerNorm)
        self.mlp = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.embed(x)
        x = x + self.attn(x)
        return self.fc((x + self.mlp(x)).mean(1))


def test_a_timm_attention_with_a_norm_over_its_heads_keeps_them():
    model, x = NormedHeads(), torch.randn(4, 5, 12)
    assert not prunable_heads(model.attn)
    fp.prune(model, "magnitude", [(x, torch.arange(4))], 0.2)
    assert model.attn.num_heads == 4 and model.attn.qkv.out_features == 96
    assert model.mlp[0].out_features < 64
    model(x).sum().backward()


@pytest.mark.parametrize("name, size, kwargs", [
    ("deit_tiny_patch16_224", 32, {"img_size": 32, "patch_size": 4}),
    ("vit_tiny_patch16_224", 64, {"img_size": 64, "patch_size": 8}),
    ("mobilevit_xxs", 64, {}),  # a hybrid: MobileNet blocks and timm's ViT attention
])
def test_timm_models_lose_heads(name, size, kwargs):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10, **kwargs)
    x, y = batch(size, 4)
    dense = sum(m.num_heads for m in heads_of(model))
    fp.prune(model, "snip", [(x, y)], 0.3)
    assert sum(m.num_heads for m in heads_of(model)) < dense
    assert_heads_consistent(model)
    model.train()(x).sum().backward()


@pytest.mark.slow
def test_fastvits_attention_keeps_its_heads_and_the_rest_prunes():
    """FastViT's attention reshapes its output to the input width: its heads stay."""
    torch.manual_seed(0)
    model = timm.create_model("fastvit_sa12", pretrained=False, num_classes=10)
    x, y = batch(64, 4)
    dense = [m.num_heads for m in heads_of(model)]
    before = sum(p.numel() for p in model.parameters())
    fp.prune(model, "snip", [(x, y)], 0.3)
    assert [m.num_heads for m in heads_of(model)] == dense
    assert sum(p.numel() for p in model.parameters()) < before
    model.train()(x).sum().backward()
