"""The `fp` command line: bad input a user can cause is one sentence and a non-zero exit."""
import json
from pathlib import Path

import pytest

from fp.cli import main

REPO = Path(__file__).parents[2]
TINY = ["--bind", "train.epochs=1", "--bind", "prune.rounds=1", "--bind", "digits.size=8",
        "--bind", "prune.samples=64", "--bind", "flow.enabled=False"]


def fp(capsys, *args) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(autouse=True)
def _no_third_party(monkeypatch):
    monkeypatch.setenv("FP_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.chdir(REPO)


def one_sentence_error(code, err, *needles):
    assert code == 2, err
    text = " ".join(err.split())
    assert text.startswith("error:") and "Traceback" not in err
    for needle in needles:
        assert needle in text, (needle, text)


def test_missing_config(capsys, tmp_path):
    one_sentence_error(*fp(capsys, "run", str(tmp_path / "nope.gin"))[::2], "nope.gin", "does not exist")


def test_an_error_naming_brackets_prints_them(capsys, tmp_path):
    """Messages are printed as text, never as console markup: a path like runs/[bold]x/ stays."""
    missing = tmp_path / "[bold]x" / "[red]nope.gin"
    one_sentence_error(*fp(capsys, "run", str(missing))[::2], "[bold]x/[red]nope.gin")


def test_directory_as_config(capsys, tmp_path):
    one_sentence_error(*fp(capsys, "run", str(tmp_path))[::2], "is a directory")


def test_gin_syntax_error_names_file_and_line(capsys, tmp_path):
    cfg = tmp_path / "bad.gin"
    cfg.write_text("train.epochs = 3\ntrain.lr = 0.1 0.2\n")
    one_sentence_error(*fp(capsys, "run", str(cfg))[::2], "bad.gin", "line 2")


@pytest.mark.parametrize("binding, needles", [
    ("train.epoks=3", ["epoks", "did you mean 'epochs'"]),
    ("prune.measure='snpi'", ["snpi", "did you mean 'snip'"]),
    ("model.architecture='resnet65'", ["resnet65", "did you mean 'resnet56'"]),
    ("data.dataset='cifar1O'", ["cifar1O", "did you mean"]),
    ("prune.target=1.0", ["prune.target = 1.0", "[0, 1)"]),
    ("train.epochs=-2", ["train.epochs = -2"]),
    ("prune.rounds=0", ["prune.rounds = 0"]),
    ("prune.rounds=99", ["prune.rounds", "99"]),
])
def test_bad_bindings(capsys, tmp_path, binding, needles):
    code, _, err = fp(capsys, "run", "gin/quickstart.gin", "--bind", binding, "--out", str(tmp_path / "r"))
    one_sentence_error(code, err, *needles)


def test_dataset_missing_offline_says_where_it_looked(capsys, tmp_path):
    code, _, err = fp(capsys, "run", "gin/resnet56_snip.gin", "--bind", f"cifar10.root='{tmp_path}'",
                      "--bind", "cifar10.download=False", "--out", str(tmp_path / "r"))
    one_sentence_error(code, err, str(tmp_path))


def test_empty_imagefolder(capsys, tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    code, _, err = fp(capsys, "run", "gin/quickstart.gin", "--bind", "data.dataset='imagefolder'",
                      "--bind", f"imagefolder.root='{tmp_path}'", "--out", str(tmp_path / "r"))
    one_sentence_error(code, err, str(tmp_path / "train"))


def test_debug_flag_shows_the_traceback(capsys, tmp_path):
    with pytest.raises(Exception):
        main(["--debug", "run", str(tmp_path / "nope.gin")])


def test_bad_input_never_touches_a_finished_run(capsys, tmp_path):
    out = tmp_path / "done"
    code, stdout, err = fp(capsys, "run", "gin/quickstart.gin", *TINY, "--out", str(out))
    assert code == 0, err
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code, _, err = fp(capsys, "run", "gin/quickstart.gin", *TINY, "--bind", "train.lr=0.5", "--out", str(out))
    one_sentence_error(code, err, "different config", "--force")
    code, stdout, _ = fp(capsys, "run", "gin/quickstart.gin", *TINY, "--out", str(out))
    assert code == 0 and "finished run" in stdout
    assert before == {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert json.loads((out / "summary.json").read_text())["epochs"] == 1


def test_list_and_plugins(capsys):
    code, stdout, _ = fp(capsys, "list", "measures")
    assert code == 0 and "grasp" in stdout and "snip" in stdout
    code, _, err = fp(capsys, "list", "mesures")
    one_sentence_error(code, err, "did you mean 'measures'")
    code, stdout, _ = fp(capsys, "plugins")
    assert code == 0 and "flowprune" in stdout and "fp_register_measures" in stdout
