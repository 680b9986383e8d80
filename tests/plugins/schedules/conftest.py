"""Helpers for the schedule tests."""
import pytest

from fp.schedule import PruneStep


def assert_well_formed(plan: list[PruneStep], target: float) -> None:
    """The invariants every plan keeps: increasing steps, non-decreasing targets, ends at target."""
    steps = [s.step for s in plan]
    targets = [s.target for s in plan]
    assert steps == sorted(set(steps)), f"steps not strictly increasing: {steps}"
    assert targets == sorted(targets), f"targets decrease: {targets}"
    assert all(0.0 <= t < 1.0 for t in targets)
    if target == 0.0:
        assert plan == []
    else:
        assert abs(targets[-1] - target) <= 1e-12


@pytest.fixture
def well_formed():
    return assert_well_formed
