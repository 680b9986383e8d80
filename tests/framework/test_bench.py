"""``fp bench``: the rows' structure on a tiny configuration. A benchmark measures speed; these
tests never look at how fast anything was."""
import json
import math
import tarfile

import pytest
import torch
from rich.console import Console

import fp
from fp.errors import DataError
from fp.tools.bench import Sizes, bench, format_rows
from fp.tools.bench.folder import check_data, extract_cifar, write_jpegs
from fp.tools.bench.scoring_cost import INFORMATIONAL, TARGETS, score_rows
from fp.tools.bench import outside
from fp import timing as timing_module
from fp.timing import PairedTimes, Task, measure_ratio
from fp.tools.bench.rows import make_row, meets
from fp.tools.bench.folder import crop_and_flip, write_jpegs
from fp.tools.bench.training import amp_row
from fp.errors import FpError

TINY = Sizes(loop_repeats=1, score_architecture="small_cnn", score_batches=1, batch_size=8,
             train_architecture="small_cnn", train_batches=2, augment_images=32, loader_workers=2,
             repeats=1, image_shape=(3, 8, 8), outside_batches=1,
             outside_batch_size=4, outside_repeats=1, prune_models=(("resnet18", 16),),
             prune_batches=1, prune_batch_size=4, prune_repeats=1)
OUTSIDE = ["snip", "taylor", "biased_snip", "fisher", "bn_taylor", "grasp", "grad_norm"]
OUTSIDE_MODELS = ["torchvision_resnet18", "small_cnn"]
KEYS = {"name", "ratio", "target", "ok", "ratio_is", "measured_s", "baseline_s", "baseline",
        "notes", "runs_s"}


@pytest.fixture(scope="module")
def rows():
    return bench(sizes=TINY, manager=fp.make_manager(autoload=False))


def test_rows_cover_every_benchmark_and_every_registered_measure(rows):
    measures = fp.make_manager(autoload=False).registries["measures"].names()
    assert [r["name"] for r in rows] == (["train_loop", "augment", "folder_train"]
                                         + [f"score/{m}" for m in measures]
                                         + [f"outside/{m}/{model}" for model in OUTSIDE_MODELS
                                            for m in OUTSIDE]
                                         + ["outside/prune/resnet18"]
                                         + ["prune_surgery", "latency_target", "amp_channels_last",
                                            "cli_help", "cli_list_measures"])
    assert set(TARGETS) <= set(measures)  # every target names a real measure


def test_every_row_is_plain_json_with_a_verdict_that_matches_its_ratio(rows):
    assert json.loads(json.dumps(rows)) == rows
    for row in rows:
        assert KEYS <= set(row), row["name"]
        if row.get("skipped") or row["ratio"] is None:  # nothing timed: its notes say why
            assert row.get("skipped") or (row["ok"] is False and row["notes"])
            continue
        assert math.isfinite(row["ratio"]) and row["ratio"] > 0
        assert row["ok"] == meets(row["ratio"], row["target"])
        repeats = len(row["runs_s"]["measured"])
        assert repeats == len(row["runs_s"]["baseline"])
        # latency timings repeat to a time budget, every other row TINY.repeats times
        assert repeats >= 5 if row["name"] == "latency_target" else repeats == TINY.repeats
        assert row["measured_s"] > 0 and row["baseline_s"] > 0


def test_score_rows_carry_their_targets_and_name_the_hvp_method(rows):
    by_name = {r["name"]: r for r in rows}
    assert by_name["score/snip"]["target"] == "<= 1.05"
    assert by_name["score/grasp"]["target"] == "<= 2.5"
    assert by_name["score/synflow"]["target"] == "<= 0.05"
    assert "hvp " in by_name["score/grasp"]["notes"]
    assert "hvp " not in by_name["score/snip"]["notes"]


def test_outside_rows_time_the_public_call_against_a_users_loop_with_their_targets(rows):
    by_name = {r["name"]: r for r in rows}
    for model in OUTSIDE_MODELS:
        for measure in OUTSIDE:
            row = by_name[f"outside/{measure}/{model}"]
            first_order = measure not in ("grasp", "grad_norm")
            assert row["target"] == ("<= 1.05" if first_order else "<= 2.5")
            assert row["baseline"] == outside.BASELINE
            assert row["ratio_is"] == "measured/baseline time"
            assert "4 samples in 1 batches of 4, input (3, 8, 8)" in row["notes"]
    assert "both at T=200" in by_name["outside/grasp/small_cnn"]["notes"]
    assert "both at T=1" in by_name["outside/grad_norm/small_cnn"]["notes"]
    assert "T=5 (the default), the loop on raw logits" in by_name["outside/snip/small_cnn"]["notes"]


def test_the_loop_divides_by_t_only_for_a_measure_whose_class_sets_it():
    manager = fp.make_manager(autoload=False)
    build = manager.registries["measures"].build
    assert outside.defining_temperature(build("grasp")) == 200.0
    assert outside.defining_temperature(build("grad_norm")) == 1.0
    assert outside.defining_temperature(build("snip")) is None
    assert outside.defining_temperature(build("taylor", temperature=2.0)) is None


def test_outside_prune_rows_time_fp_prune_against_torch_pruning(rows):
    row = {r["name"]: r for r in rows}["outside/prune/resnet18"]
    assert row["target"] == outside.PRUNE_TARGET == "<= 1.0"
    assert row["baseline"] == outside.PRUNE_BASELINE and "GroupTaylorImportance" in row["baseline"]
    assert "1 batches of 4, input (3, 16, 16)" in row["notes"]
    assert "fp.prune" in row["notes"] and "Torch-Pruning" in row["notes"]


def test_the_torch_pruning_side_prunes_a_copy_and_keeps_the_classifier():
    model = outside.torchvision_model("resnet18", 10)
    batches = outside.random_batches(1, 2, 16, 10, torch.device("cpu"))
    pruned = outside.torch_pruning_taylor(model, batches, outside.PRUNE_AMOUNT)
    assert pruned.fc.out_features == 10 and pruned.fc.in_features < 512
    assert pruned(batches[0][0]).shape == (2, 10)


def test_outside_rows_leave_the_model_in_its_own_mode():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 10)).train()
    batches = [(torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,)))]
    found = outside.outside_rows({"tiny": model}, batches, repeats=1, device=torch.device("cpu"))
    assert [r["name"] for r in found] == [f"outside/{m}/tiny" for m in OUTSIDE]
    assert all(m.training for m in model.modules())


def test_speedup_rows_say_so_and_gpu_only_rows_are_skipped_on_cpu(rows):
    by_name = {r["name"]: r for r in rows}
    assert by_name["augment"]["ratio_is"] == "baseline/measured time"
    assert by_name["train_loop"]["ratio_is"] == "measured/baseline time"
    amp = by_name["amp_channels_last"]
    assert amp["skipped"] and amp["ratio"] is None and "cpu" in amp["notes"]


def test_format_rows_shows_each_row_and_marks_misses(rows):
    missed = dict(rows[0], ok=False, name="missed_row")
    table = format_rows(rows + [missed])
    assert table.row_count == len(rows) + 1
    console = Console(record=True, width=250)
    console.print(table)
    text = console.export_text()
    assert "score/grasp" in text and "skipped" in text and "NO" in text


def test_a_third_party_measure_gets_an_informational_row():
    class Cubic(fp.Measure):
        name = "cubic_bench_test"

        def __call__(self, ctx):
            return {n: w.detach().abs() ** 3 for n, w in ctx.weights.items()}

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 10))
    batches = [(torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,)))]
    (row,) = score_rows(model, batches, [Cubic()], repeats=1, device=torch.device("cpu"))
    assert row["name"] == "score/cubic_bench_test"
    assert row["target"] == INFORMATIONAL and row["ok"]


def test_amp_row_runs_on_any_device_as_a_speedup():
    row = amp_row(fp.make_manager(autoload=False), architecture="small_cnn", batches=1,
                  batch_size=4, repeats=1, device=torch.device("cpu"))
    assert row["name"] == "amp_channels_last" and row["ratio"] > 0
    assert row["ratio_is"] == "baseline/measured time"


def test_a_ratio_warms_up_then_alternates_and_keeps_prepare_untimed():
    calls = []
    measured = Task(prepare=lambda: calls.append("prepare") or "fresh",
                    run=lambda state: calls.append(f"measured:{state}"))
    timing = measure_ratio(measured, lambda: calls.append("baseline"), repeats=3,
                           device=torch.device("cpu"), balance=False)
    runs = [c for c in calls if c != "prepare"]
    assert runs == ["baseline", "measured:fresh",            # warm-up
                    "baseline", "measured:fresh",            # pair 1
                    "measured:fresh", "baseline",            # pair 2
                    "baseline", "measured:fresh"]            # pair 3
    assert calls.count("prepare") == 4
    assert len(timing.measured) == len(timing.baseline) == 3


def test_a_ratio_times_the_shorter_side_as_a_mean_of_runs_about_as_long_as_the_other(
        monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(timing_module, "clock", lambda: clock[0])
    runs = []

    def work(name, seconds):
        return lambda: runs.append(name) or clock.__setitem__(0, clock[0] + seconds)

    timing = measure_ratio(work("long", 3.0), work("short", 1.0), repeats=2,
                           device=torch.device("cpu"))
    assert runs == ["short", "long"] + ["short"] * 3 + ["long"] + ["long"] + ["short"] * 3
    assert timing.measured == [3.0, 3.0] and timing.baseline == [1.0, 1.0]
    assert timing.ratio() == 3.0


def test_ratio_is_the_median_over_pairs_and_times_the_fastest_of_each_side():
    timing = PairedTimes(measured=[4.0, 3.0, 10.0], baseline=[1.5, 1.0, 2.0])
    assert timing.ratio() == 3.0  # pairs 2.67, 3, 5
    assert timing.ratio(speedup=True) == pytest.approx(1 / 3)
    lucky = PairedTimes(measured=[3.0, 3.0, 3.0], baseline=[1.0, 2.0, 2.0])  # one quiet baseline
    assert lucky.ratio() == 1.5 and make_row("y", lucky, "<= 2", baseline="b")["ok"]
    row = make_row("x", timing, "<= 2.5", baseline="b")
    assert row["ratio"] == 3.0 and not row["ok"] and row["measured_s"] == 3.0
    assert row["baseline_s"] == 1.0 and row["runs_s"]["measured"] == [4.0, 3.0, 10.0]
    assert meets(6.0, ">= 5") and not meets(4.0, ">= 5") and meets(1e9, INFORMATIONAL)


def test_a_cuda_bench_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(FpError, match="--device .cuda. names no available device"):
        bench(device="cuda", sizes=TINY, manager=fp.make_manager(autoload=False))


def test_folder_rows_hand_written_augmentation_is_a_crop_and_flip_of_each_image():
    images = torch.randint(0, 256, (16, 3, 5, 6), dtype=torch.uint8)
    out = crop_and_flip(images, 2, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(images, (2,) * 4)
    windows = [padded[:, :, dy:dy + 5, dx:dx + 6] for dy in range(5) for dx in range(5)]
    candidates = torch.stack(windows + [w.flip(-1) for w in windows], 1)   # (16, 50, 3, 5, 6)
    matches = (candidates == out[:, None]).flatten(2).all(2)
    assert matches.any(1).all()  # every image is one of its 25 crops, mirrored or not
    assert matches[:, 25:].any(1).any() and matches[:, :25].any(1).any()  # both flips occur


def test_folder_row_writes_its_own_jpegs_when_the_archive_is_absent(tmp_path):
    write_jpegs(tmp_path, 2, (8, 8))
    data = fp.make_manager(autoload=False).registries["datasets"].get("imagefolder")(
        root=str(tmp_path), image_size=8, num_workers=0)
    assert (len(data), data.num_classes, data.in_memory) == (20, 10, True)


def test_folder_rows_read_cifar_jpegs_from_a_folder_or_an_archive_alike(tmp_path):
    source = tmp_path / "jpegs"
    write_jpegs(source, 3, (32, 32), test_per_class=2)
    with tarfile.open(tmp_path / "jpegs.tar.gz", "w:gz") as archive:
        for split in ("train", "test"):
            archive.add(source / split, arcname=split)
    taken = {}
    for name in ("jpegs", "jpegs.tar.gz"):
        extract_cifar(check_data(tmp_path / name), tmp_path / f"from-{name}", 2, test_per_class=1)
        taken[name] = sorted(str(p.relative_to(tmp_path / f"from-{name}"))
                             for p in (tmp_path / f"from-{name}").rglob("*.jpg"))
    assert taken["jpegs"] == taken["jpegs.tar.gz"]
    assert len(taken["jpegs"]) == 10 * (2 + 1) and "train/class3/0001.jpg" in taken["jpegs"]


@pytest.mark.parametrize("name", ["missing", "not-an-archive.txt", "empty"])
def test_bench_data_that_is_not_cifar_jpegs_is_one_sentence(tmp_path, name):
    (tmp_path / "not-an-archive.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as error:
        bench(quick=True, data=tmp_path / name)
    assert str(error.value) == (f"--data {tmp_path / name} is neither a folder with train/ and "
                                f"test/ class folders of CIFAR-10 JPEGs nor a tar archive of one.")
