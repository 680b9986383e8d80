import pytest

import fp
from fp.manager import builtin_plugins
from fp_builtins.schedules.cubic import Cubic
from fp_builtins.schedules.imp import IterativeMagnitude
from fp_builtins.schedules.manual import Manual
from fp_builtins.schedules.oneshot import OneShot
from fp_builtins.schedules.rounds import Rounds


@pytest.fixture
def schedules(monkeypatch):
    # only the schedules plugin: other built-ins are tested in their own folders
    monkeypatch.setenv("FP_BLOCK_PLUGINS", ",".join(n for n in builtin_plugins() if n != "schedules"))
    return fp.make_manager(autoload=False).registries["schedules"]


def test_every_schedule_is_registered_under_its_name(schedules):
    assert schedules.classes == {"rounds": Rounds, "oneshot": OneShot, "manual": Manual,
                                 "cubic": Cubic, "imp": IterativeMagnitude}
    assert all(schedules.providers[n] == "schedules" for n in schedules.names())


def test_each_schedule_has_a_one_line_description(schedules):
    for name in schedules.names():
        assert schedules.describe(name)
        assert "\n" not in schedules.classes[name].__doc__.strip()


def test_constructor_arguments_bind_through_gin(schedules):
    import gin

    with gin.unlock_config():
        gin.parse_config(["oneshot.epoch = 3", "imp.rewind_epoch = 2"])
    try:
        assert schedules.build("oneshot").epoch == 3
        assert schedules.build("imp").rewind_epoch == 2
    finally:
        gin.clear_config()
