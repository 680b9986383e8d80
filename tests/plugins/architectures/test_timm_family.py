"""timm's models as ``timm.<model>``: a family the registry resolves on first use, so that listing
and non-timm runs never import timm (seconds), with per-model arguments, the ``timm``
weights settings, ``fp.build_model`` and plain-data saving.

Tests that build a timm model skip where timm is not installed; the registry's family mechanics
and the not-installed sentence are checked without it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gin
import pytest
import torch

import fp
from fp.errors import ConfigError, RegistryError
from fp.gin_adapter import drop_configurable
from fp.registry import Registry, register_with_gin
from fp_builtins.architectures import _timm

REPO = Path(__file__).parents[3]
FP = Path(sys.executable).with_name("fp")
ENV = {**os.environ, "FP_DISABLE_PLUGIN_AUTOLOAD": "1", "COLUMNS": "200"}


@pytest.fixture
def timm():
    return pytest.importorskip("timm")


@pytest.fixture
def architectures(timm):
    return fp.make_manager(autoload=False).registries["architectures"]


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=300)


# ---- the family in the registry: no timm needed -------------------------------------------------

class Widget:
    def __init__(self, num_classes: int = 10, size: int = 1) -> None:
        self.num_classes, self.size = num_classes, size


class WidgetFamily:
    """Widgets as widget.<n>."""

    name = "widget.<n>"
    family_prefix = "widget."
    made: list[str] = []

    @staticmethod
    def describe() -> str:
        return "3 widgets"

    @classmethod
    def member(cls, name: str) -> type:
        if name not in {"widget.a", "widget.b", "widget.c"}:
            raise RegistryError(f"no widget {name!r}.")
        cls.made.append(name)
        return type(f"widget_{name[-1]}", (Widget,), {"name": name})


@pytest.fixture
def widgets():
    WidgetFamily.made = []
    registry = Registry("architectures")
    registry.add(WidgetFamily, "test")
    register_with_gin({"architectures": registry})
    yield registry
    for name in WidgetFamily.made:
        drop_configurable(f"architectures.{name}")
    fp.make_manager(autoload=False).registries  # gin's resolver back to the built-in registries


def test_a_family_creates_a_member_on_first_use_only(widgets):
    assert widgets.names() == [] and WidgetFamily.made == []
    assert widgets.listing() == [("widget.<n>", "3 widgets", "test")]
    cls = widgets.get("widget.b")
    assert widgets.get("widget.b") is cls and WidgetFamily.made == ["widget.b"]
    assert widgets.names() == ["widget.b"] and widgets.providers["widget.b"] == "test"
    with pytest.raises(RegistryError, match="no widget 'widget.z'"):
        widgets.get("widget.z")


def test_a_binding_may_name_a_member_before_anything_else_does(widgets):
    gin.parse_config("widget.c.size = 3")
    assert WidgetFamily.made == ["widget.c"]
    assert widgets.build("widget.c").size == 3
    with pytest.raises(RegistryError, match="no widget 'widget.y'"):
        gin.parse_config("widget.y.size = 3")


def test_a_family_and_a_class_under_its_prefix_are_refused(widgets):
    clash = type("clash", (Widget,), {"name": "widget.a"})
    with pytest.raises(RegistryError, match="registered twice: by 'test' and by 'other'"):
        widgets.add(clash, "other")
    nested = type("nested", (WidgetFamily,), {"name": "widget.x.<n>", "family_prefix": "widget.x."})
    with pytest.raises(RegistryError, match="registered twice"):
        widgets.add(nested, "other")
    bad = type("bad", (WidgetFamily,), {"name": "gadget", "family_prefix": "gadget"})
    with pytest.raises(RegistryError, match="ending in '.'"):
        widgets.add(bad, "other")


def test_without_timm_only_timm_names_fail_and_say_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now fails, as uninstalled
    _timm.architecture_class.cache_clear()
    _timm.model_count.cache_clear()
    try:
        registry = fp.make_manager(autoload=False).registries["architectures"]
        assert "not installed (pip install flowprune[timm])" in registry.describe("timm.<model>")
        with pytest.raises(RegistryError, match=r"needs timm, which is not installed; "
                                                r"pip install flowprune\[timm\]\.$"):
            registry.get("timm.resnet18")
        assert fp.build_model("small_cnn", num_classes=3, in_channels=1) is not None
    finally:
        _timm.architecture_class.cache_clear()
        _timm.model_count.cache_clear()


# ---- speed: listing and other runs never import timm ---------------------------------------------

def test_fp_list_architectures_names_the_family_without_importing_timm(timm):
    listed = subprocess.run([sys.executable, "-X", "importtime", str(FP), "list", "architectures"],
                            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr
    imported = [line for line in listed.stderr.splitlines() if line.startswith("import time:")]
    assert imported and not any(line.split("|")[-1].strip() == "timm" for line in imported)
    row = next(line for line in listed.stdout.splitlines() if line.startswith("timm.<model>"))
    assert f"{len(timm.list_models())} in timm {timm.__version__}" in row


def test_the_counted_models_are_timms_list(timm):
    _timm.model_count.cache_clear()
    assert _timm.model_count() == len(timm.list_models())


@pytest.mark.slow  # a process that parses an experiment: over 5 s
def test_import_fp_and_a_non_timm_experiment_never_import_timm(timm):
    done = run_python("import sys, fp\n"
                      "assert 'timm' not in sys.modules\n"
                      "fp.parse_experiment(['gin/quickstart.gin'])\n"
                      "fp.build_model('small_cnn', num_classes=10, in_channels=1)\n"
                      "print('timm' in sys.modules)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


# ---- building ------------------------------------------------------------------------------------

def test_fp_build_model_builds_timm_with_the_datasets_sizes(timm):
    model = fp.build_model("timm.resnet10t", num_classes=5, in_channels=1)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 5)
    assert model.fp_arch == {"name": "timm.resnet10t",
                             "kwargs": {"num_classes": 5, "in_channels": 1}}


@pytest.mark.parametrize("name", ["resnet20", "torchvision.resnet18", "timm.resnet10t"])
def test_fp_build_model_takes_every_kind_of_name(timm, name):
    model = fp.build_model(name, num_classes=7, in_channels=3)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    assert "build_model" in fp.__all__


def test_timms_own_arguments_bind_per_model_and_are_recorded(timm):
    gin.parse_config("timm.resnet10t.drop_rate = 0.25")
    model = fp.build_model("timm.resnet10t", num_classes=10, in_channels=3)
    assert model.drop_rate == 0.25
    assert model.fp_arch["kwargs"]["drop_rate"] == 0.25
    assert fp.build_model("timm.resnet10t", drop_rate=0.5).drop_rate == 0.5


@pytest.mark.parametrize("kwargs, needle", [
    ({"depthh": 3}, r"timm.resnet10t rejected its arguments \['depthh'\]: .*depthh"),
    ({"pretrained": True}, "bind timm.pretrained = True instead"),
    ({"in_chans": 1}, "fp sets it from the dataset's channels"),
])
def test_arguments_timm_refuses_are_one_sentence(architectures, kwargs, needle):
    with pytest.raises(ConfigError, match=needle) as caught:
        architectures.build("timm.resnet10t", num_classes=10, in_channels=3, **kwargs)
    assert str(caught.value).splitlines()[0].endswith(".")  # gin adds a line naming the call


def test_an_unknown_name_suggests_the_closest(architectures):
    with pytest.raises(RegistryError, match=r"unknown architecture 'timm.convnext_atoo' \(did "
                                            r"you mean 'timm.convnext_atto'\?\)"):
        architectures.get("timm.convnext_atoo")
    with pytest.raises(RegistryError, match="did you mean 'timm.convnext_atto'"):
        gin.parse_config("timm.convnext_atoo.drop_rate = 0.1")
    with pytest.raises(RegistryError, match="sets of weights, not an architecture; name "
                                            "'timm.resnet18'"):
        architectures.get("timm.resnet18.a1_in1k")


def test_an_experiment_names_a_timm_model_and_its_arguments(architectures, tmp_path):
    experiment = tmp_path / "exp.gin"
    experiment.write_text("include 'gin/quickstart.gin'\n"
                          "model.architecture = 'timm.resnet10t'\n"
                          "timm.resnet10t.drop_rate = 0.1\n")
    settings = fp.parse_experiment([experiment])
    assert settings.model.architecture == "timm.resnet10t"
    with pytest.raises(ConfigError, match=r"timm.pretrained = 'yes'"):
        fp.parse_experiment([experiment], ["timm.pretrained = 'yes'"])


@pytest.mark.slow  # a process that imports timm to list its models: over 5 s
def test_the_cli_names_an_unknown_timm_model_in_one_line(timm):
    done = subprocess.run([str(FP), "run", "gin/quickstart.gin", "--bind",
                           "model.architecture=timm.convnext_atoo"], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "'timm.convnext_atoo' (did you mean 'timm.convnext_atto'?)" in lines[0]


# ---- initial weights: timm.checkpoint and timm.pretrained ----------------------------------------

def saved_weights(tmp_path, name: str = "timm.resnet10t", **kwargs) -> tuple[Path, dict]:
    model = fp.build_model(name, **kwargs)
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


def test_a_checkpoint_gives_the_initial_weights(architectures, tmp_path):
    path, state = saved_weights(tmp_path, num_classes=10, in_channels=3)
    gin.parse_config(f"timm.checkpoint = {str(path)!r}")
    model = fp.build_model("timm.resnet10t", num_classes=10, in_channels=3)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert model.fp_arch["kwargs"] == {"num_classes": 10, "in_channels": 3}  # weights not recorded


def test_a_checkpoint_for_other_classes_keeps_all_but_a_fresh_classifier(architectures, tmp_path):
    path, state = saved_weights(tmp_path, num_classes=1000, in_channels=3)
    gin.parse_config(f"timm.checkpoint = {str(path)!r}")
    model = fp.build_model("timm.resnet10t", num_classes=10, in_channels=3)
    assert model.fc.out_features == 10
    assert torch.equal(model.conv1[0].weight, state["conv1.0.weight"])


@pytest.mark.parametrize("case, needle", [
    ("missing", "there is no such file"),
    ("other model", r"does not fit timm.resnet10t: tensors \d+ missing"),
    ("other stem", r"1 of another shape \(first 'conv1.0.weight'"),
    ("not tensors", "holds no state dict"),
    ("code", "cannot be read as plain tensors"),
])
def test_a_checkpoint_that_does_not_fit_is_one_sentence(architectures, tmp_path, case, needle):
    path = tmp_path / "weights.pt"
    if case == "other model":
        path, _ = saved_weights(tmp_path, "timm.convnext_atto", num_classes=10)
    elif case == "other stem":
        path, _ = saved_weights(tmp_path, num_classes=10, in_channels=1)
    elif case == "not tensors":
        torch.save({"epoch": 3}, path)
    elif case == "code":
        torch.save({"fn": Widget}, path)  # a class: weights-only loading refuses it
    gin.parse_config(f"timm.checkpoint = {str(path)!r}")
    with pytest.raises(ConfigError, match=needle) as caught:
        architectures.build("timm.resnet10t", num_classes=10, in_channels=3)
    assert str(caught.value).split("\n")[0].endswith(".")


def test_weights_and_an_initialisation_scheme_are_refused_together(architectures, tmp_path):
    path, _ = saved_weights(tmp_path, num_classes=10)
    gin.parse_config(f"timm.checkpoint = {str(path)!r}")
    with pytest.raises(ConfigError, match="would overwrite the weights that timm.checkpoint"):
        fp.build_model("timm.resnet10t", num_classes=10, init="kaiming_fan_out")
    gin.parse_config("timm.pretrained = True")
    with pytest.raises(ConfigError, match="bind one of them"):
        fp.build_model("timm.resnet10t", num_classes=10)


def test_pretrained_offline_is_one_sentence(architectures, monkeypatch):
    """Both of timm's download paths fail as they do without a network (nothing is fetched)."""
    import huggingface_hub
    from timm.models import _builder

    def unreachable(*args, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError(
            "An error happened while trying to locate the file on the Hub.\nCheck your connection.")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(_builder, "load_state_dict_from_hf", unreachable)
    monkeypatch.setattr(_builder, "load_state_dict_from_url", unreachable)
    gin.parse_config("timm.pretrained = True")
    with pytest.raises(ConfigError) as caught:
        fp.build_model("timm.resnet10t", num_classes=10, in_channels=3)
    message = str(caught.value).splitlines()[0]  # gin adds a line naming the call
    assert message.startswith("timm.pretrained = True could not load timm's weights for "
                              "timm.resnet10t (An error happened while trying to locate")
    assert message.endswith("bind timm.checkpoint = PATH instead.")


def test_pretrained_weights_load_as_timm_loads_them(architectures, monkeypatch):
    """Where the hub answers (here a stand-in serving a timm model's own state dict), the
    weights are timm's, adapted to the dataset's classes as timm adapts them."""
    from timm.models import _builder

    served = fp.build_model("timm.resnet10t", num_classes=1000).state_dict()
    monkeypatch.setattr(_builder, "load_state_dict_from_hf", lambda *a, **k: dict(served))
    monkeypatch.setattr(_builder, "load_state_dict_from_url", lambda *a, **k: dict(served))
    gin.parse_config("timm.pretrained = True")
    model = fp.build_model("timm.resnet10t", num_classes=10, in_channels=3)
    assert torch.equal(model.conv1[0].weight, served["conv1.0.weight"])
    assert model.fc.out_features == 10


# ---- pruned timm models saved as plain data ------------------------------------------------------

@pytest.mark.parametrize("name", ["timm.resnet10t",
                                  pytest.param("timm.resnet18d", marks=pytest.mark.slow)])
def test_a_pruned_timm_model_saves_and_loads_as_data(timm, tmp_path, name):
    model = fp.build_model(name, num_classes=10, in_channels=3)
    dense = sum(p.numel() for p in model.parameters())
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    pruned = fp.prune(model, "snip", [(x, y)], 0.3).eval()
    assert sum(p.numel() for p in pruned.parameters()) < dense
    fp.save(pruned, tmp_path / "pruned.pt")
    loaded = fp.load(tmp_path / "pruned.pt")
    assert type(loaded) is type(pruned)
    with torch.no_grad():
        assert torch.allclose(loaded(x), pruned(x), atol=1e-5)
