"""The fixed evaluation set V (``data.eval_samples``): class-balanced, seeded, the same for every
measure and on every rebuild, never scored on, and measured (loss, accuracy, ‖g‖²) at every epoch
end and around every prune event, whatever ``flow.enabled`` says."""
import copy
import json
from pathlib import Path
from types import SimpleNamespace

import gin
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fp
from fp import config
from fp.data import InMemoryDataset, evaluation_indices, hold_out, scoring_dataset, without
from fp.data.subsets import per_class_indices
from fp.engine import run_experiment
from fp.engine.build import build_setup
from fp.engine.prune_event import draw_scoring
from fp.errors import ConfigError
from fp_builtins.flow import eval_set

CPU = torch.device("cpu")
QUICKSTART = Path(__file__).resolve().parents[2] / "gin" / "quickstart.gin"
#: a small synthetic dataset: 4 classes of random 1x8x8 images (no two alike)
SYNTHETIC = ["data.dataset = 'synthetic'", "synthetic.num_train = 600", "synthetic.num_test = 40",
             "synthetic.shape = (1, 8, 8)", "synthetic.num_classes = 4", "flow.enabled = False",
             "prune.samples = 80", "prune.batch_size = 32"]
RECORD_KEYS = {"event", "at", "epoch", "step", "loss", "acc", "grad_norm_sq", "samples",
               "temperature"}


def build(tmp_path, *bindings, name="run"):
    manager = fp.make_manager(autoload=False)
    settings = config.parse([], SYNTHETIC + list(bindings), manager)
    return build_setup(settings, manager, tmp_path / name).run


def rows(batches) -> set[bytes]:
    """Every image of ``batches`` as bytes (normalised floats: equal images, equal bytes)."""
    return {x.numpy().tobytes() for xs, _ in batches for x in xs}


def synthetic(num_train=300):
    return fp.make_manager(autoload=False).registries["datasets"].build(
        "synthetic", num_train=num_train, num_test=10, shape=(1, 4, 4), num_classes=3)


# --- the draw ------------------------------------------------------------------------------------

def test_v_is_class_balanced_seeded_and_not_the_train_subset_draw():
    labels = torch.arange(5).repeat_interleave(torch.tensor([40, 25, 30, 60, 12]))
    index = evaluation_indices(labels, 10, seed=3)
    assert torch.bincount(labels[index]).tolist() == [10] * 5
    assert torch.equal(index, index.sort().values) and len(set(index.tolist())) == 50
    assert torch.equal(evaluation_indices(labels, 10, seed=3), index)
    assert not torch.equal(evaluation_indices(labels, 10, seed=4), index)
    assert not torch.equal(per_class_indices(labels, 10, seed=3, split="train"), index)


def test_v_is_normalised_like_loader_batches_and_the_scoring_view_lacks_it():
    data = synthetic()
    held = hold_out(data, 60, seed=0, device=CPU)  # 20 of each of 3 classes
    whole = next(iter(data.loader("train", len(data))))  # un-augmented, in the split's order
    assert torch.equal(torch.cat([x for x, _ in held.batches]), whole[0][held.indices])
    assert torch.equal(torch.cat([y for _, y in held.batches]), whole[1][held.indices])
    assert torch.bincount(torch.cat([y for _, y in held.batches])).tolist() == [20] * 3
    rest = held.scoring
    assert len(rest) == 240 and len(data) == 300  # the run's own dataset keeps every image
    assert rows(rest.loader("train", 64)).isdisjoint(rows(held.batches))
    assert rows(rest.loader("train", 64)) | rows(held.batches) == rows([whole])


def test_v_comes_in_batches_of_at_most_512():
    held = hold_out(synthetic(num_train=1500), 1200, seed=0, device=CPU)
    assert [len(y) for _, y in held.batches] == [512, 512, 176]


def test_the_view_shares_the_test_split_and_leaves_the_dataset_alone():
    data = synthetic()
    view = without(data, torch.tensor([0, 5, 7]))
    assert view.splits["test"] is data.splits["test"] and len(data) == 300 and len(view) == 297


# --- in a built run ------------------------------------------------------------------------------

def test_v_is_the_same_for_every_measure_and_every_rebuild(tmp_path):
    snip = build(tmp_path, "data.eval_samples = 40", "prune.measure = 'snip'", name="a")
    grasp = build(tmp_path, "data.eval_samples = 40", "prune.measure = 'grasp'", name="b")
    again = build(tmp_path, "data.eval_samples = 40", "prune.measure = 'snip'", name="a")  # resume
    other = build(tmp_path, "data.eval_samples = 40", "experiment.seed = 1", name="c")
    assert [len(y) for _, y in snip.eval_set] == [40]
    for same in (grasp, again):
        assert all(torch.equal(a, b) for (a, _), (b, _) in zip(snip.eval_set, same.eval_set))
    assert rows(other.eval_set) != rows(snip.eval_set)
    assert len(snip.dataset) == 600 and len(snip.train_loader) == 5  # training keeps V: 600 / 128


@pytest.mark.parametrize("measure", ["snip", "grasp"])  # shuffled and class-balanced draws
def test_scoring_draws_never_hold_an_image_of_v(tmp_path, measure):
    run = build(tmp_path, "data.eval_samples = 400", f"prune.measure = '{measure}'",
                "prune.samples = 100")  # 100 of the ~150 images of each class are in V
    held = rows(run.eval_set)
    for index in (1, 2, 3):
        assert rows(run.scoring_batches(index)).isdisjoint(held)


def test_without_v_the_scoring_draw_is_the_one_of_the_whole_split(tmp_path):
    for measure in ("snip", "grasp"):
        run = build(tmp_path, f"prune.measure = '{measure}'", name=measure)
        assert run.eval_set == [] and run.scoring_dataset is None
        assert scoring_dataset(run) is run.dataset
        # the rule as it was: a run stand-in holding only the dataset and the settings
        bare = SimpleNamespace(dataset=run.dataset, measure=run.measure, device=run.device,
                               rank=0, world_size=1, settings=run.settings)
        for index in (1, 2):
            drawn, bare_drawn = draw_scoring(run, index), draw_scoring(bare, index)
            assert drawn[1] == bare_drawn[1]
            assert all(torch.equal(a, b) and torch.equal(u, v)
                       for (a, u), (b, v) in zip(drawn[0], bare_drawn[0]))


# --- what is measured ----------------------------------------------------------------------------

def test_loss_accuracy_and_grad_norm_match_a_float64_computation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 5 * 5, 3))
    model.train()(torch.randn(16, 1, 5, 5))  # non-trivial BatchNorm running statistics
    batches = [(torch.randn(n, 1, 5, 5), torch.randint(0, 3, (n,))) for n in (7, 5, 3)]
    got = eval_set.measure(model, batches, temperature=2.5)
    assert model.training  # its mode is given back
    exact = copy.deepcopy(model).double().eval()  # one batch of everything: the mean over V
    x, y = torch.cat([x for x, _ in batches]).double(), torch.cat([y for _, y in batches])
    logits = exact(x)
    loss = F.cross_entropy(logits / 2.5, y)
    grad = torch.autograd.grad(loss, list(exact.parameters()))
    assert got["grad_norm_sq"] == pytest.approx(float(sum((g ** 2).sum() for g in grad)), rel=1e-6)
    assert got["loss"] == pytest.approx(loss.item(), rel=1e-6)
    assert got["acc"] == float((logits.argmax(1) == y).double().mean())
    assert (got["samples"], got["temperature"]) == (15, 2.5)


class Scalars:
    """A test plugin that keeps what is published through ``log_scalars``."""

    __name__ = "scalars"

    def __init__(self):
        self.seen = []

    @fp.hookimpl
    def log_scalars(self, run, scalars, step):
        self.seen.append((step, dict(scalars)))


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A tiny digits run (2 epochs, 2 prune events, flow diagnostics OFF) with V of 100 images."""
    scalars = Scalars()
    out = tmp_path_factory.mktemp("eval_set") / "run"
    bindings = ["train.epochs = 2", "prune.rounds = 2", "prune.target = 0.5",
                "prune.samples = 64", "digits.size = 8", "train.batch_size = 128",
                "flow.enabled = False", "data.eval_samples = 100"]
    gin.clear_config()  # the module's run starts before the per-test clean-up fixture
    outcome = run_experiment([str(QUICKSTART)], bindings, out=out, quiet=True,
                             manager=fp.make_manager(autoload=False, plugins=(scalars,)))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return outcome, records, scalars.seen


def test_records_come_at_every_epoch_end_and_around_every_prune_event(logged):
    outcome, records, _ = logged
    steps = outcome.summary["steps"] // 2  # per epoch; the rounds schedule prunes after epochs 1, 2
    seen = [(r["at"], r["epoch"], r["step"], r.get("index"))
            for r in records if r["event"] == "eval_set"]
    assert seen == [("before_prune", 0, steps, 1), ("after_prune", 0, steps, 1),
                    ("epoch", 1, steps, None),
                    ("before_prune", 1, 2 * steps, 2), ("after_prune", 1, 2 * steps, 2),
                    ("epoch", 2, 2 * steps, None)]
    for r in records:
        if r["event"] == "eval_set":
            assert set(r) == RECORD_KEYS | ({"index"} if r["at"] != "epoch" else set())
            assert (r["samples"], r["temperature"]) == (100, 1.0) and 0 <= r["acc"] <= 1
            assert r["loss"] > 0 and r["grad_norm_sq"] > 0
    assert not any(r["event"] == "flow" for r in records)  # flow.enabled = False


def test_after_prune_measures_the_pruned_model_the_epoch_end_measures_again(logged):
    """Events fall after an epoch's last step, before its end: nothing changes the model between
    the after_prune measurement and the epoch end's (the event's before_prune follows a whole
    epoch of steps after the previous epoch end, so it has no earlier twin)."""
    _, records, _ = logged
    v = [r for r in records if r["event"] == "eval_set"]
    for after, end in ((v[1], v[2]), (v[4], v[5])):
        assert (after["loss"], after["acc"], after["grad_norm_sq"]) == \
            (end["loss"], end["acc"], end["grad_norm_sq"])
    assert v[0]["loss"] != v[1]["loss"]  # the surgery changed the model


def test_epoch_end_values_go_to_tensorboard(logged):
    outcome, records, published = logged
    ends = {r["step"]: r for r in records if r["event"] == "eval_set" and r["at"] == "epoch"}
    tags = [(step, s) for step, s in published if any(k.startswith("eval_set/") for k in s)]
    assert [step for step, _ in tags] == sorted(ends)
    for step, scalars in tags:
        assert scalars == {"eval_set/loss": ends[step]["loss"], "eval_set/acc": ends[step]["acc"],
                           "eval_set/grad_norm_sq": ends[step]["grad_norm_sq"]}


# --- refusals ------------------------------------------------------------------------------------

def one_sentence(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text and text.endswith(".")
    return text


def test_more_per_class_than_a_class_can_spare_is_refused(tmp_path):
    with pytest.raises(ConfigError) as error:  # ~150 images a class; V must leave some
        build(tmp_path, "data.eval_samples = 800")
    assert "data.eval_samples = 800 asks 200 training images of every class" in one_sentence(error)
    with pytest.raises(ConfigError) as error:
        build(tmp_path, "data.eval_samples = 3")
    assert "fewer than the 4 classes" in one_sentence(error)


def test_a_balanced_draw_short_of_images_names_v(tmp_path):
    """grasp's balanced draw asks more of a class than V leaves: the sentence says V took them."""
    run = build(tmp_path, "data.eval_samples = 400", "prune.measure = 'grasp'",
                "prune.samples = 280")  # 70 a class, of the ~50 that V leaves
    with pytest.raises(ConfigError) as error:
        run.scoring_batches(1)
    text = one_sentence(error)
    assert "asks 70 images of every class" in text
    assert text.endswith("once data.eval_samples = 400 holds 100 of every class out of the "
                         "scoring draws.")


def test_a_streaming_dataset_is_refused(tmp_path):
    class Streamed(fp.Dataset):
        name = "streamed"

    with pytest.raises(ConfigError) as error:
        hold_out(Streamed(), 10, seed=0, device=CPU)
    assert "data.eval_samples needs an in-memory dataset" in one_sentence(error)
    assert hold_out(Streamed(), 0, seed=0, device=CPU).batches == []  # nothing asked: no need
    assert isinstance(synthetic(), InMemoryDataset)


def test_a_streaming_image_folder_is_refused_before_the_run_builds(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for k in range(2):
            (tmp_path / split / f"c{k}").mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
                    tmp_path / split / f"c{k}" / f"{i}.png")
    manager = fp.make_manager(autoload=False)
    settings = config.parse([], ["data.dataset = 'imagefolder'", f"imagefolder.root = '{tmp_path}'",
                                 "imagefolder.in_memory = False", "imagefolder.image_size = 8",
                                 "data.eval_samples = 2", "flow.enabled = False"], manager)
    with pytest.raises(ConfigError) as error:
        build_setup(settings, manager, tmp_path / "run")
    assert "'imagefolder' streams from disk" in one_sentence(error)


def test_grad_norm_on_v_leaves_masked_filters_out():
    """A masked filter's BN shift still gets a gradient, but it is no parameter of the pruned
    model: ‖g‖² on V counts only the entries that are left."""
    from fp_builtins.flow.eval_set import measure, pruned_entries

    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    y = torch.arange(6) % 10
    model = fp.pruning.build_model("resnet20", num_classes=10, in_channels=3)
    fp.prune(model, "magnitude", [(x, y)], 0.3, residual="masked")
    pruned = pruned_entries(model, {})
    assert pruned and all(m.shape == p.shape for n, p in model.named_parameters()
                          for name, m in pruned.items() if n == name)
    with fp.nn.eval_mode(model):
        loss = fp.nn.tempered_loss(model(x), y, 1.0)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    names = [n for n, _ in model.named_parameters()]
    everything = sum(float(g.double().pow(2).sum()) for g in grads)
    kept = sum(float(g.double().masked_fill(pruned[n], 0).pow(2).sum()) if n in pruned
               else float(g.double().pow(2).sum()) for n, g in zip(names, grads))
    assert kept < everything
    assert measure(model, [(x, y)], 1.0, pruned)["grad_norm_sq"] == pytest.approx(kept, rel=1e-6)
