"""α schedules: endpoints and monotonicity."""

from __future__ import annotations

import itertools

import pytest

from policy.schedules import AlphaSchedule


@pytest.mark.parametrize("kind", ["linear", "exponential"])
@pytest.mark.parametrize("start", [0.0, 0.2, 0.9])
def test_rising_schedules_hit_both_endpoints(kind: str, start: float) -> None:
    sched = AlphaSchedule(kind=kind, start=start, steps=500)
    assert sched(0) == pytest.approx(start)
    assert sched(500) == 1.0
    assert sched(10_000) == 1.0
    values = [sched(t) for t in range(0, 501, 5)]
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert min(values) >= 0.0 and max(values) <= 1.0


def test_linear_midpoint_and_exponential_shape() -> None:
    assert AlphaSchedule("linear", start=0.0, steps=100)(50) == pytest.approx(0.5)
    exp = AlphaSchedule("exponential", start=0.0, steps=100, floor=0.01)
    # Gap 1 − α halves geometrically: at half-way it is sqrt(floor).
    assert 1 - exp(50) == pytest.approx(0.1)
    assert 1 - exp(99) < 0.011


def test_constant_schedule_stays_put_and_bad_settings_fail() -> None:
    sched = AlphaSchedule("constant", start=0.3, steps=10)
    assert sched(0) == sched(10) == sched(1000) == 0.3
    with pytest.raises(ValueError):
        AlphaSchedule("cosine")
    with pytest.raises(ValueError):
        AlphaSchedule(start=1.5)


def test_end_caps_alpha_below_one() -> None:
    from policy.schedules import AlphaSchedule

    for kind in ("linear", "exponential"):
        s = AlphaSchedule(kind=kind, start=0.0, steps=10, end=0.9)
        values = [s(t) for t in range(0, 30)]
        assert max(values) == 0.9 and values[-1] == 0.9
        assert values == sorted(values)
    assert AlphaSchedule(kind="linear", steps=10)(10) == 1.0  # the paper's default
    import pytest

    with pytest.raises(ValueError, match="end must lie"):
        AlphaSchedule(end=0.0)
