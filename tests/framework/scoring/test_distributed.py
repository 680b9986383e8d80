"""Two gloo ranks, each scoring its own share of the batches, end with identical statistics: those
of one process scoring all the batches, means over samples. The shares are unequal (rank 0 has
batches of 32 and 16 samples, rank 1 one of 5), so a mean of the ranks' means would differ.
Every rank takes rank 0's timed choices (HVP method, exact shortcuts)."""
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from fp.scoring import ScoreContext

SIZES = ([32, 16], [5])
STATISTICS = ("grad", "grad_sq", "hess_grad", "filter_hess_grad")

RANK_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    import torch.distributed as dist
    from torch import nn
    from fp.scoring import ScoreContext

    rank, store, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 3)).double()
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    gen = torch.Generator().manual_seed(1)
    sizes = %(sizes)r
    batches = [[(torch.randn(n, 3, 8, 8, generator=gen, dtype=torch.float64),
                 torch.randint(0, 3, (n,), generator=gen)) for n in share] for share in sizes]
    found = {"model": model.state_dict(), "batches": [b for share in batches for b in share]}
    for method in ("double_backward", "forward_over_reverse", "auto"):
        ctx = ScoreContext(model, batches[rank], hvp_method=method)
        filters = ScoreContext(model, batches[rank], hvp_method=method)
        found[method] = {"grad": ctx.grad(), "grad_sq": ctx.grad_sq(),
                         "hess_grad": ctx.hess_grad(),
                         "filter_hess_grad": filters.filter_hess_grad(),
                         "chosen": filters.info["hvp_method"],
                         "shortcuts": (ctx.info["scoring_matmul"], ctx.info["scoring_fold"],
                                       ctx.info["scoring_shortcuts_s"])}
    torch.save(found, out)
    dist.destroy_process_group()
""")


def run_ranks(tmp_path) -> list[dict]:
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT % {"sizes": SIZES})
    outs = [tmp_path / f"rank{r}.pt" for r in range(2)]
    procs = [subprocess.Popen([sys.executable, str(script), str(r), str(tmp_path / "store"),
                               str(outs[r])], stderr=subprocess.PIPE, text=True) for r in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
    return [torch.load(out, weights_only=False) for out in outs]


@pytest.mark.slow  # two fresh interpreters importing torch
def test_unequal_shares_score_identically_and_as_one_process_would(tmp_path):
    ranks = run_ranks(tmp_path)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 3)).double()
    model.load_state_dict(ranks[0]["model"])
    whole = ScoreContext(model, ranks[0]["batches"], hvp_method="double_backward")
    means_of_means = {n: (ScoreContext(model, ranks[0]["batches"][:2]).grad()[n]
                          + ScoreContext(model, ranks[0]["batches"][2:]).grad()[n]) / 2
                      for n in whole.grad()}
    for method in ("double_backward", "forward_over_reverse", "auto"):
        assert ranks[0][method]["chosen"] == ranks[1][method]["chosen"]  # rank 0's choice
        # the exact shortcuts ("auto" outside the tests' fixtures): rank 0 times, rank 1 takes
        assert ranks[0][method]["shortcuts"][:2] == ranks[1][method]["shortcuts"][:2]
        assert ranks[1][method]["shortcuts"][2] == 0
        for stat in STATISTICS:
            expected = getattr(whole, stat)()
            assert set(ranks[0][method][stat]) == set(expected)
            for name, value in expected.items():
                assert torch.equal(ranks[0][method][stat][name], ranks[1][method][stat][name])
                torch.testing.assert_close(ranks[0][method][stat][name], value,
                                           rtol=1e-10, atol=1e-15)
    got = ranks[0]["double_backward"]["grad"]
    assert not all(torch.allclose(got[n], means_of_means[n], rtol=1e-3) for n in got)
