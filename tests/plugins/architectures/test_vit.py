"""vit_cifar, HeadAttention (nn.MultiheadAttention with a qkv Linear) and a pruning run of
gin/vit_cifar_snip.gin."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import fp
from fp.engine import run_experiment
from fp.errors import ConfigError
from fp.attention import HeadAttention, expose_heads

from .conftest import param_count

REPO = Path(__file__).parents[3]


def test_vit_cifar_is_a_small_transformer_with_head_attention(architectures):
    model = architectures.build("vit_cifar", num_classes=10, in_channels=3)
    assert 0.5e6 < param_count(model) < 0.6e6
    blocks = list(model.encoder.layers)
    assert len(blocks) == 4 and all(isinstance(b.self_attention, HeadAttention) for b in blocks)
    assert blocks[0].self_attention.num_heads == 8
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_vit_cifar_refuses_sizes_that_do_not_divide(architectures):
    with pytest.raises(ConfigError, match="multiple of vit_cifar.heads"):
        architectures.build("vit_cifar", num_classes=10, in_channels=3, dim=30, heads=4)
    with pytest.raises(ConfigError, match="multiple of vit_cifar.patch_size"):
        architectures.build("vit_cifar", num_classes=10, in_channels=3, patch_size=5)


def with_attention(**kwargs) -> nn.Module:
    return nn.Sequential(nn.MultiheadAttention(16, 4, **kwargs))


@pytest.mark.parametrize("batch_first", [True, False])
def test_head_attention_computes_what_multihead_attention_does(batch_first):
    reference = with_attention(batch_first=batch_first).eval()
    swapped = expose_heads(with_attention(batch_first=batch_first)).eval()
    swapped.load_state_dict(reference.state_dict())  # nn.MultiheadAttention's names load
    assert isinstance(swapped[0], HeadAttention)
    x = torch.randn(2, 5, 16) if batch_first else torch.randn(5, 2, 16)
    other = torch.randn_like(x)
    padding = torch.tensor([[False] * 4 + [True], [False] * 5])
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)
    for args, kwargs in [((x, x, x), {}), ((x, other, other), {}),
                         ((x, x, x), {"key_padding_mask": padding, "attn_mask": causal})]:
        expected, expected_weights = reference[0](*args, **kwargs)
        out, weights = swapped[0](*args, **kwargs)
        torch.testing.assert_close(out, expected)
        torch.testing.assert_close(weights, expected_weights)


def test_fp_built_torchvision_vits_get_head_attention_and_the_same_function(architectures):
    from torchvision.models import vit_b_32

    torch.manual_seed(0)
    reference = vit_b_32(weights=None, image_size=32, num_classes=10).eval()
    torch.manual_seed(0)
    model = architectures.build("torchvision.vit_b_32", num_classes=10, in_channels=3,
                                image_size=32).eval()
    assert isinstance(model.encoder.layers[0].self_attention, HeadAttention)
    nn.init.normal_(reference.heads.head.weight)
    model.heads.head.weight.data.copy_(reference.heads.head.weight)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-4)


TINY = ["data.dataset = 'synthetic'", "synthetic.num_train = 128", "synthetic.num_test = 32",
        "synthetic.shape = (3, 32, 32)", "flow.enabled = False", "train.epochs = 2",
        "train.batch_size = 32", "prune.rounds = 1", "prune.samples = 32",
        "prune.batch_size = 32", "prune.target = 0.5", "vit_cifar.dim = 32",
        "vit_cifar.depth = 2", "vit_cifar.heads = 4", "vit_cifar.mlp_dim = 64"]


def test_fp_run_of_vit_cifar_snip_prunes_heads_and_finishes(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    outcome = run_experiment(["gin/vit_cifar_snip.gin"], TINY, out=tmp_path / "run", quiet=True)
    assert outcome.summary["filters_kept"] == outcome.summary["dense_filters"] // 2
    model = fp.load(tmp_path / "run" / "model.pt")
    heads = [layer.self_attention.num_heads for layer in model.encoder.layers]
    assert sum(heads) < 8 and min(heads) >= 1  # half the filters: more than the MLPs hold
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["event"] for r in records].count("prune") == 1
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
