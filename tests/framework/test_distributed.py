"""torch.distributed with 2 gloo processes on CPU: ranks agree bit for bit and learn as one."""
import json

import pytest

from fp.engine.launch import launch

BINDS = ["train.epochs = 6", "prune.rounds = 2", "prune.target = 0.5", "prune.samples = 128",
         "digits.size = 8", "flow.enabled = False"]


@pytest.mark.slow
def test_two_gloo_ranks_end_identical_and_accurate(tmp_path):
    results = launch(2, ["gin/quickstart.gin"], BINDS, tmp_path / "ddp", "cpu")
    assert set(results) == {0, 1}
    assert results[0]["digest"] == results[1]["digest"]  # same pruning, same weights
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["filters_kept"] == pytest.approx(summary["dense_filters"] / 2, abs=4)
    assert summary["test_acc"] >= 0.85
    assert results[1]["summary"]["test_acc"] == summary["test_acc"]  # evaluation is all-reduced
