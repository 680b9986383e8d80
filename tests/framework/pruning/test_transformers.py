"""Vision transformers: attention heads and MLP widths are pruned physically, the embedding is
left alone, pruned models save and load, and no model makes the analysis hang."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torchvision.models.swin_transformer import (SwinTransformer, shifted_window_attention,
                                                 swin_t)
from torchvision.models.vision_transformer import VisionTransformer, vit_b_16

import fp
from fp.attention import HeadAttention, expose_heads
from fp.errors import PruningError
from fp.pruning import build_model, channel_groups, load, prune_channels, save
from fp.pruning.heads import attention_modules, remove_heads

MEASURES = ["magnitude", "snip", "grasp", "taylor", "grad_norm", "synflow", "random"]


def small_vit(expose: bool = True) -> nn.Module:
    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                              hidden_dim=64, mlp_dim=128, num_classes=10)
    nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision zeroes it: no gradients
    return expose_heads(model) if expose else model


def small_swin() -> nn.Module:
    torch.manual_seed(0)
    return SwinTransformer(patch_size=[4, 4], embed_dim=32, depths=[2, 2], num_heads=[2, 4],
                           window_size=[4, 4], num_classes=10)


def batch(size: int = 32, n: int = 8):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, size, size, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def attention_of(model):
    return list(attention_modules(model))


def silenced(model, heads):
    """``model`` with the values of ``heads`` (one list per attention module) zeroed: what a
    model without those heads computes."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for module, gone in zip(attention_of(model), heads):
            inner = module.qkv.out_features // 3
            width = inner // module.num_heads
            for h in gone:
                module.qkv.weight[2 * inner + h * width:2 * inner + (h + 1) * width] = 0
                module.qkv.bias[2 * inner + h * width:2 * inner + (h + 1) * width] = 0
    return model


def test_heads_are_slots_of_their_q_k_v_rows_and_the_embedding_is_not_grouped():
    groups = channel_groups(small_vit(), batch()[0][:1])
    heads = [g for g in groups if g.root.endswith("self_attention.qkv.weight")]
    assert len(heads) == 2 and all((g.slots, g.interleave, g.width) == (4, 48, 192) for g in heads)
    rows = heads[0].members[heads[0].root]
    head_2 = sorted(rows[heads[0].slot_channels(2)].tolist())
    assert head_2 == [part * 64 + 2 * 16 + d for part in range(3) for d in range(16)]
    assert sorted(g.root.split(".")[-2] for g in groups if g not in heads) == ["0", "0"]  # MLPs
    assert not any("conv_proj.weight" in g.members for g in groups)


def test_a_head_scores_the_mean_of_its_rows():
    group = next(g for g in channel_groups(small_vit(), batch()[0][:1]) if g.slots == 4)
    scores = {group.root: torch.arange(192.0)}
    expected = [torch.arange(192.0)[group.members[group.root][group.slot_channels(h)]].mean()
                for h in range(4)]
    assert group.slot_scores(scores).tolist() == pytest.approx([float(e) for e in expected])


@pytest.mark.parametrize("build, size", [(small_vit, 32), (small_swin, 32)])
def test_removing_heads_computes_what_silencing_them_does(build, size):
    model, x = build().eval(), batch(size)[0]
    heads = [[0, 2][:m.num_heads - 1] for m in attention_of(model)]
    reference = silenced(model, heads)
    for module, gone in zip(attention_of(model), heads):
        remove_heads(module, gone)
    assert [m.num_heads for m in attention_of(model)] == \
        [m.num_heads - len(g) for m, g in zip(attention_of(reference), heads)]
    torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-5)


def test_swin_attention_keeps_torchvisions_function():
    model = small_swin().eval()
    module = attention_of(model)[1]
    x = torch.randn(2, 8, 8, 32)
    expected = shifted_window_attention(
        x, module.qkv.weight, module.proj.weight, module.get_relative_position_bias(),
        module.window_size, module.num_heads, shift_size=module.shift_size,
        qkv_bias=module.qkv.bias, proj_bias=module.proj.bias, training=False)
    channel_groups(model, torch.randn(1, 3, 32, 32))  # gives it fp's forward
    assert type(module).__name__ == "PrunableShiftedWindowAttention"
    torch.testing.assert_close(module(x), expected)


@pytest.mark.parametrize("measure", MEASURES)
def test_every_measure_scores_heads_and_prune_removes_some(measure):
    model, (x, y) = small_vit(), batch()
    scores = fp.score(model, measure, [(x, y)])
    heads = [g for g in channel_groups(model, x[:1]) if g.root.endswith("qkv.weight")]
    assert all(torch.isfinite(g.slot_scores(scores)).all() for g in heads)
    fp.prune(model, measure, [(x, y)], 0.5)  # more than the MLPs alone can give
    attention = attention_of(model)
    assert sum(m.num_heads for m in attention) < 8
    for module in attention:
        assert module.qkv.out_features == 3 * module.num_heads * module.head_dim
        assert module.out_proj.in_features == module.num_heads * module.head_dim == \
            module.qkv.out_features // 3
    assert all(layer.mlp[0].out_features < 128 for layer in model.encoder.layers)
    assert model.conv_proj.out_channels == 64 and model.class_token.shape[-1] == 64
    model.train()(x).sum().backward()


def test_fp_prune_makes_a_plain_torchvision_vits_heads_prunable():
    model, (x, y) = small_vit(expose=False), batch()
    before = model.eval()(x)
    fp.prune(model, "magnitude", [(x, y)], 0.0)  # nothing removed: only the attention swapped
    assert all(isinstance(layer.self_attention, HeadAttention) for layer in model.encoder.layers)
    assert torch.allclose(model(x), before, atol=1e-5)
    fp.prune(model, "magnitude", [(x, y)], 0.5)
    assert sum(layer.self_attention.num_heads for layer in model.encoder.layers) < 8
    assert all(layer.mlp[0].out_features < 128 for layer in model.encoder.layers)
    model.train()(x).sum().backward()


def test_head_surgery_prunes_carried_tensors_like_the_weights():
    model = small_vit()
    groups = channel_groups(model, batch()[0][:1])
    index, group = next((i, g) for i, g in enumerate(groups) if g.slots == 4)
    name = group.root
    carry = {name: model.get_parameter(name).detach() * 2}
    result = prune_channels(model, groups, {index: group.slot_channels(1)}, carry=carry)
    assert result.carried[name].shape == (144, 64)
    torch.testing.assert_close(result.carried[name], model.get_parameter(name).detach() * 2)
    assert result.removed[name].tolist() == [p * 64 + 16 + d for p in range(3) for d in range(16)]


def test_a_pruned_vit_saves_and_loads_with_identical_outputs(tmp_path):
    model, (x, y) = build_model("vit_cifar", dim=32, depth=2, heads=4, mlp_dim=64), batch()
    fp.prune(model, "magnitude", [(x, y)], 0.5)
    loaded = load(save(model, tmp_path / "vit.pt"))
    assert [m.num_heads for m in attention_of(loaded)] == [m.num_heads for m in attention_of(model)]
    torch.testing.assert_close(loaded(x), model.eval()(x))


class Mixer(nn.Module):
    """Swin's window attention under another name (no ``num_heads``, no ``qkv``), so it is not
    recognised as attention and torch-pruning has to follow its reshapes."""

    def __init__(self, dim: int, shift: int):
        super().__init__()
        self.inp, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.bias = nn.Parameter(torch.zeros(1, 2, 16, 16))
        self.shift = shift

    def forward(self, x):
        return shifted_window_attention(x, self.inp.weight, self.out.weight, self.bias, [4, 4], 2,
                                        [self.shift, self.shift], qkv_bias=self.inp.bias,
                                        proj_bias=self.out.bias, training=self.training)


class Tangle(nn.Module):
    def __init__(self, dim: int = 32):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, 4)
        self.mixers = nn.ModuleList([Mixer(dim, 0), Mixer(dim, 2)])
        self.fc = nn.Linear(dim, 10)

    def forward(self, x):
        x = self.embed(x).permute(0, 2, 3, 1)
        for mixer in self.mixers:
            x = x + mixer(x)
        return self.fc(x.mean((1, 2)))


def test_a_model_whose_reshapes_defeat_the_tracer_is_refused_naming_the_module():
    with pytest.raises(PruningError, match=r"budget .* in 'mixers\.1' \(Mixer\)"):
        channel_groups(Tangle().eval(), torch.randn(1, 3, 32, 32))


class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Linear(8, 8), nn.Unflatten(1, (3, -1)))

    def forward(self, x):
        return self.block(x)


def test_a_failing_trace_names_the_module_it_failed_in():
    with pytest.raises(PruningError, match=r"in 'block\.1' \(Unflatten\)"):
        channel_groups(Broken(), torch.randn(1, 8))


@pytest.mark.slow
def test_vit_b_16_at_64_pixels_prunes_heads_and_mlps():
    torch.manual_seed(0)
    model = expose_heads(vit_b_16(weights=None, image_size=64, num_classes=10))
    nn.init.normal_(model.heads.head.weight, std=0.02)
    x, y = batch(64, 4)
    fp.prune(model, "magnitude", [(x, y)], 0.5)  # the MLPs alone give at most 0.42
    assert sum(m.num_heads for m in attention_of(model)) < 144
    model.train()(x).sum().backward()
    plain = vit_b_16(weights=None, image_size=64, num_classes=10)
    fp.prune(plain, "snip", [(x, y)], 0.1)  # MLP widths only
    assert sum(layer.mlp[0].out_features for layer in plain.encoder.layers) < 12 * 3072


@pytest.mark.slow
def test_swin_t_at_64_pixels_prunes_heads_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    model = build_model("torchvision.swin_t", num_classes=10)
    x, y = batch(64, 4)
    fp.prune(model, "snip", [(x, y)], 0.3)  # once did not return
    assert sum(m.num_heads for m in attention_of(model)) < sum(m.num_heads for m in
                                                                attention_of(swin_t()))
    model.train()(x).sum().backward()
    loaded = load(save(model, tmp_path / "swin.pt"))
    torch.testing.assert_close(loaded(x), model.eval()(x))
