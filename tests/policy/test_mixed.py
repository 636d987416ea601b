"""MixedPolicy: eq. 14 mixture, slates, masking, sources."""

from __future__ import annotations

import numpy as np
import pytest

from policy.checkpoint import build_network, init_policy
from policy.config import PolicyConfig
from policy.exploration import ExplorationConfig
from policy.mixed import MixedPolicy
from policy.types import Observation, pad_histories

CFG = PolicyConfig(num_items=40, max_len=8, hidden=16, heads=2, blocks=1, num_users=5)
HISTORIES = [[], [3], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [39, 0]]


def _ap(alpha: float) -> MixedPolicy:
    return MixedPolicy(
        build_network(CFG, seed=1), build_network(CFG, seed=2), alpha=alpha, scheme="ap"
    )


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_probs_sum_to_one_and_equal_the_mixture(alpha: float) -> None:
    policy = _ap(alpha)
    padded = pad_histories(HISTORIES, CFG.max_len)
    users = np.array([0, 1, 4, 99])
    mix = policy.probs(padded, users)
    p_theta, p_beta = policy.component_probs(padded, users)
    assert p_beta is not None
    assert mix.shape == (len(HISTORIES), CFG.num_items)
    np.testing.assert_allclose(mix.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(mix, (1 - alpha) * p_theta + alpha * p_beta, atol=1e-15)
    # θ and β really differ, so the test would notice a wrong alpha.
    assert np.abs(p_theta - p_beta).max() > 1e-4


def test_slate_propensity_is_the_mixture_probability_for_k1() -> None:
    policy = _ap(0.4)
    slates = policy.act_batch(HISTORIES, k=1, user_ids=[0, 1, 2, 3], rng=np.random.default_rng(0))
    mix = policy.probs(pad_histories(HISTORIES, CFG.max_len), np.array([0, 1, 2, 3]))
    for row, slate in enumerate(slates):
        assert slate.propensities[0] == pytest.approx(mix[row, slate.items[0]], rel=1e-9)
        assert slate.sources[0] in ("theta", "beta")


def test_sources_follow_alpha_at_the_extremes() -> None:
    for alpha, expected in ((0.0, "theta"), (1.0, "beta")):
        slates = _ap(alpha).act_batch(HISTORIES, k=3, rng=np.random.default_rng(1))
        assert {s for slate in slates for s in slate.sources} == {expected}


def test_slates_are_distinct_and_respect_exclude_and_history_mask() -> None:
    net = build_network(CFG, seed=3)
    policy = MixedPolicy(net, exploration=ExplorationConfig(mask_history=True))
    exclude = [[0, 1, 2], [], [11, 12], []]
    slates = policy.act_batch(
        HISTORIES, k=[5, 10, 3, 38], exclude=exclude, rng=np.random.default_rng(2)
    )
    for hist, ex, slate, k in zip(HISTORIES, exclude, slates, [5, 10, 3, 38], strict=True):
        assert len(slate.items) == k == len(set(slate.items))
        assert not set(slate.items) & set(ex)
        assert not set(slate.items) & set(hist)
        assert all(0 < p <= 1 for p in slate.propensities)
    # Row 3 has 2 history items and asks for 38 of 40: the history mask is dropped only
    # when it leaves too few items; a k beyond what exclude leaves is an error.
    with pytest.raises(ValueError, match="k=38"):
        policy.act_batch([[]], k=38, exclude=[list(range(3))])


def test_empty_history_and_single_act() -> None:
    policy = init_policy(CFG, seed=0)
    slate = policy.act(Observation(user_id=2, history=()), k=2, rng=np.random.default_rng(0))
    assert len(slate.items) == 2 and slate.sources == ("theta", "theta")
    greedy = policy.act(Observation(user_id=2, history=()), k=2, explore=False)
    assert greedy.propensities == (1.0, 1.0)
    probs = policy.probs(pad_histories([()], CFG.max_len), np.array([2]))[0]
    assert list(greedy.items) == list(np.argsort(-probs, kind="stable")[:2])


def test_bad_input_is_refused() -> None:
    policy = init_policy(CFG, seed=0)
    with pytest.raises(ValueError, match="outside"):
        policy.act_batch([[40]])
    with pytest.raises(ValueError, match="outside"):
        policy.act_batch([[1]], exclude=[[-3]])
    with pytest.raises(ValueError, match="beta"):
        MixedPolicy(build_network(CFG, seed=0), scheme="ap")
    with pytest.raises(ValueError, match="alpha"):
        MixedPolicy(build_network(CFG, seed=0), alpha=0.5)


def test_per_call_exploration_overrides_the_deployment() -> None:
    policy = init_policy(CFG, seed=0)  # deployment default: categorical
    greedy = ExplorationConfig(strategy="greedy")
    a = policy.act_batch(HISTORIES, k=3, exploration=greedy, rng=np.random.default_rng(0))
    b = policy.act_batch(HISTORIES, k=3, explore=False, rng=np.random.default_rng(1))
    assert a == b
    eps = ExplorationConfig(strategy="epsilon", epsilon=1.0, mask_history=True)
    slates = policy.act_batch(HISTORIES, k=2, exploration=eps, rng=np.random.default_rng(2))
    for hist, slate in zip(HISTORIES, slates, strict=True):
        assert not set(slate.items) & set(hist)
        assert all(p == pytest.approx(1.0 / (CFG.num_items - len(set(hist)) - j))
                   for j, p in enumerate(slate.propensities))


def test_act_arrays_masks_the_history_when_asked() -> None:
    policy = MixedPolicy(build_network(CFG, seed=4),
                         exploration=ExplorationConfig(mask_history=True))
    padded = pad_histories([list(range(30)), [5], []], CFG.max_len)
    rng = np.random.default_rng(0)
    for _ in range(20):
        items, props = policy.act_arrays(padded, None, explore=True, rng=rng)
        for row in range(3):
            assert int(items[row]) not in set(padded[row][padded[row] >= 0].tolist())
        assert ((props > 0) & (props <= 1)).all()
