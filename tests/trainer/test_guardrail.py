"""The reward guardrail's comparison: per decision, or per session where users leave."""

from __future__ import annotations

import numpy as np

from trainer.guardrail import GuardConfig, RewardGuard, source_value


def _feed(guard: RewardGuard, source: str, n: int, reward: float, leave: float,
          rng: np.random.Generator) -> None:
    r = reward + rng.normal(0.0, 0.5, size=n)
    d = rng.random(n) < leave
    guard.observe((source, float(x), bool(y)) for x, y in zip(r, d, strict=True))


def test_session_value_sees_what_reward_per_item_misses() -> None:
    """β earns a little less per item but keeps users four times longer (the Coat demo's
    situation): per decision it looks worse, per session it is far better."""
    rng = np.random.default_rng(0)
    by_metric = {}
    for metric in ("reward", "session", "auto"):
        guard = RewardGuard(GuardConfig(window=4000, min_samples=50, metric=metric))
        _feed(guard, "theta", 1500, 2.1, 0.16, np.random.default_rng(1))
        _feed(guard, "beta", 1500, 1.9, 0.04, np.random.default_rng(2))
        by_metric[metric] = guard.check()
    assert by_metric["reward"].alarm and by_metric["reward"].metric == "reward"
    assert not by_metric["session"].alarm and by_metric["session"].z < -3
    assert by_metric["auto"].metric == "session" and not by_metric["auto"].alarm
    v = by_metric["session"]
    assert 10 < v.value_theta < 16 and 38 < v.value_beta < 60  # ≈ 2.1/0.16, 1.9/0.04
    # The same per-item rewards where β makes users leave faster: alarm.
    guard = RewardGuard(GuardConfig(window=4000, min_samples=50))
    _feed(guard, "theta", 1500, 2.0, 0.05, rng)
    _feed(guard, "beta", 1500, 2.0, 0.20, rng)
    worse = guard.check()
    assert worse.metric == "session" and worse.alarm


def test_without_ended_sessions_auto_compares_rewards() -> None:
    rng = np.random.default_rng(3)
    guard = RewardGuard(GuardConfig(window=4000, min_samples=50))
    _feed(guard, "theta", 800, 1.0, 0.0, rng)
    _feed(guard, "beta", 800, 0.5, 0.0, rng)
    verdict = guard.check()
    assert verdict.metric == "reward" and verdict.alarm
    assert verdict.value_beta == verdict.mean_beta


def test_session_value_and_its_variance() -> None:
    rng = np.random.default_rng(4)
    values = []
    for _ in range(300):
        r = list(2.0 + rng.normal(0, 1, size=400))
        d = list(rng.random(400) < 0.1)
        values.append(source_value(r, d, "session"))
    estimates = np.array([v for v, _ in values])
    assert abs(estimates.mean() - 20.0) < 1.0
    # The delta-method variance matches the spread of the estimates (within 30 %).
    predicted = float(np.mean([var for _, var in values]))
    assert 0.7 < predicted / float(estimates.var()) < 1.3


def test_the_side_that_keeps_users_is_not_judged_per_item_for_ending_few_sessions() -> None:
    """The fresh-clone demo's case: β has few samples and, keeping users, ended only a
    handful of sessions; θ ended many. Counted together there are sessions, so the
    session value is compared (per item β looks worse and would be pulled back)."""
    guard = RewardGuard(GuardConfig(window=4000, min_samples=50))
    _feed(guard, "theta", 700, 2.06, 0.16, np.random.default_rng(5))
    _feed(guard, "beta", 130, 1.73, 0.04, np.random.default_rng(6))
    verdict = guard.check()
    assert verdict.metric == "session" and not verdict.alarm
    per_item = RewardGuard(GuardConfig(window=4000, min_samples=50, metric="reward"))
    _feed(per_item, "theta", 700, 2.06, 0.16, np.random.default_rng(5))
    _feed(per_item, "beta", 130, 1.73, 0.04, np.random.default_rng(6))
    assert per_item.check().alarm
