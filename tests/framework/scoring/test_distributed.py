"""Two gloo ranks, each scoring its own batches, end with identical statistics: those of one
process scoring all the batches (equal batch counts per rank make the mean of means the mean)."""
import subprocess
import sys
import textwrap

import pytest
import torch

from fp.scoring import ScoreContext

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
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(4, 3, 8, 8, generator=gen, dtype=torch.float64),
                torch.randint(0, 3, (4,), generator=gen)) for _ in range(4)]
    ctx = ScoreContext(model, batches[2 * rank:2 * rank + 2], hvp_method="double_backward")
    torch.save({"grad": ctx.grad(), "grad_sq": ctx.grad_sq(), "hess_grad": ctx.hess_grad(),
                "model": model.state_dict(), "batches": batches}, out)
    dist.destroy_process_group()
""")


@pytest.mark.slow  # two fresh interpreters importing torch
def test_ranks_score_identically_and_as_one_process_would(tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    outs = [tmp_path / f"rank{r}.pt" for r in range(2)]
    procs = [subprocess.Popen([sys.executable, str(script), str(r), str(tmp_path / "store"),
                               str(outs[r])], stderr=subprocess.PIPE, text=True) for r in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    ranks = [torch.load(out, weights_only=False) for out in outs]

    from torch import nn
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 3)).double()
    model.load_state_dict(ranks[0]["model"])
    whole = ScoreContext(model, ranks[0]["batches"])
    for stat in ("grad", "grad_sq", "hess_grad"):
        expected = getattr(whole, stat)()
        for name, value in expected.items():
            assert torch.equal(ranks[0][stat][name], ranks[1][stat][name])
            torch.testing.assert_close(ranks[0][stat][name], value, rtol=1e-10, atol=1e-15)
