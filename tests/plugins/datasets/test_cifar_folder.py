"""Real CIFAR-10 from its image folder (the JPEG archive $FP_CIFAR10_JPG names): a short
prune-and-train through the engine learns, shrinks the model, and resumes after an interruption
to exactly the numbers of an uninterrupted run. Skipped where the archive is absent."""
import os
import signal
import tarfile
from pathlib import Path

import pytest
import torch

import fp
from fp.engine import run_experiment
from fp.errors import Interrupted
from fp.tools.evaluate import evaluate

REPO = Path(__file__).parents[3]
FILES = ["gin/quickstart.gin", "gin/base/cifar10_folder.gin"]
PER_CLASS = {"train": 100, "test": 50}
STEPS_PER_EPOCH = 10 * PER_CLASS["train"] // 50
BINDS = [f"data.train_per_class = {PER_CLASS['train']}",
         f"data.test_per_class = {PER_CLASS['test']}",
         "small_cnn.widths = (16, 32, 32, 64)", "train.batch_size = 50", "train.epochs = 8",
         "prune.rounds = 2", "prune.target = 0.5", "prune.samples = 200", "flow.enabled = False"]
COMPARED = ["test_acc", "test_loss", "train_loss", "params", "filters_kept", "steps", "epochs"]
STOP_AT = 4 * STEPS_PER_EPOCH + STEPS_PER_EPOCH // 2  # inside epoch 5, after both prune events

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Steps this small are not worth a second core, and on a shared 2-core host they are ~10x
    slower on two threads when another process holds one core (each op waits for it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory, cifar10_archive):
    root = tmp_path_factory.mktemp("cifar10")
    with tarfile.open(cifar10_archive, "r:gz") as archive:
        archive.extractall(root, filter="data")
    return root


class StopAt:
    """Sends this process SIGTERM after one step, as a scheduler ending a job would."""

    __name__ = "stop_at"

    def __init__(self, step):
        self.step = step

    @fp.hookimpl
    def after_step(self, run, step, loss):
        if step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def train(root, out, manager=None):
    binds = [f"imagefolder.root = '{root}'", *BINDS]
    return run_experiment(FILES, binds, out=out, quiet=True,
                          manager=manager or fp.make_manager(autoload=False))


@pytest.fixture(scope="module")
def reference(cifar_root, tmp_path_factory):
    return train(cifar_root, tmp_path_factory.mktemp("reference") / "run")


def test_real_cifar_trains_well_above_chance_on_a_smaller_model(reference, cifar_root):
    summary = reference.summary
    assert summary["steps"] == 8 * STEPS_PER_EPOCH and summary["prune_events"] == 2
    assert summary["test_acc"] > 0.2  # chance is 0.1
    assert summary["params"] < summary["dense_params"]  # pruned filters are physically gone
    assert fp.pruning.count_params(reference.model) == summary["params"]
    assert list(cifar_root.glob("fp-decoded-32px-*.npz"))  # decoded once, cached by the data


def test_fp_eval_sees_the_runs_test_subset(reference):
    result = evaluate(reference.out_dir, batch_size=250, warmup=1, repeats=2)
    assert result["test_samples"] == 10 * PER_CLASS["test"]
    assert result["test_acc"] == pytest.approx(reference.summary["test_acc"], abs=1e-6)


def test_an_interrupted_run_resumes_to_the_uninterrupted_numbers(reference, cifar_root, tmp_path):
    out = tmp_path / "interrupted"
    stopper = fp.make_manager(autoload=False, plugins=(StopAt(STOP_AT),))
    with pytest.raises(Interrupted, match=f"stopped by SIGTERM at step {STOP_AT}"):
        train(cifar_root, out, stopper)
    assert (out / "checkpoints" / "last.pt").exists() and not (out / "summary.json").exists()
    resumed = train(cifar_root, out)
    assert resumed.resumed
    assert {k: resumed.summary[k] for k in COMPARED} == {k: reference.summary[k] for k in COMPARED}
    mine, theirs = resumed.model.state_dict(), reference.model.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[name], theirs[name]) for name in mine)
