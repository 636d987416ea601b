"""Off-policy estimators where the truth is known: synthetic bandits and a two-step MDP;
the candidate's action distribution against what MixedPolicy.act_arrays really draws."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from policy.checkpoint import init_policy
from policy.config import PolicyConfig
from policy.types import PAD
from trainer.ope.candidate import (
    AdditiveRewardModel,
    CriticModel,
    candidate_distribution,
    greedy_variant,
    target_and_cross_direct,
)
from trainer.ope.estimators import (
    effective_sample_size,
    importance_weights,
    step_estimates,
    trajectory_estimates,
)

K = 6
CONTEXTS = 4


def _bandit(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(logging μ [C, K], target π [C, K], mean reward [C, K], true value of π)."""
    rng = np.random.default_rng(seed)
    mu = 0.6 * rng.dirichlet(np.ones(K), size=CONTEXTS) + 0.4 / K  # full support
    pi = rng.dirichlet(np.ones(K) * 0.7, size=CONTEXTS)
    means = rng.uniform(0.0, 1.0, size=(CONTEXTS, K))
    return mu, pi, means, float((pi * means).sum(axis=1).mean())


def _logs(seed: int, n: int, mu: np.ndarray, means: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ctx = rng.integers(0, CONTEXTS, n)
    cum = np.cumsum(mu[ctx], axis=1)
    a = (cum > rng.random(n)[:, None]).argmax(axis=1)
    r = rng.binomial(1, means[ctx, a]).astype(np.float64)
    return ctx, a, r


def test_estimators_are_unbiased_on_a_synthetic_bandit() -> None:
    mu, pi, means, truth = _bandit()
    wrong_q = np.full((CONTEXTS, K), 0.9)  # a bad direct model: DR must stay unbiased
    vals: dict[str, list[float]] = {"ips": [], "snips": [], "dr": []}
    for seed in range(300):
        ctx, a, r = _logs(seed, 200, mu, means)
        est = step_estimates(r, pi[ctx, a], mu[ctx, a], q_logged=wrong_q[ctx, a],
                             v_target=(pi * wrong_q).sum(axis=1)[ctx], n_boot=0)
        for k, e in est.items():
            vals[k].append(e.value)
    for k, v in vals.items():
        arr = np.asarray(v)
        se = arr.std(ddof=1) / np.sqrt(len(arr))
        assert abs(arr.mean() - truth) < 4 * se + 0.005, (k, arr.mean(), truth, se)


def test_bootstrap_intervals_cover_the_truth_about_95_percent() -> None:
    mu, pi, means, truth = _bandit(1)
    q = means + 0.1  # a near-right direct model
    hits = {"ips": 0, "snips": 0, "dr": 0}
    runs = 120
    for seed in range(runs):
        ctx, a, r = _logs(1000 + seed, 400, mu, means)
        est = step_estimates(r, pi[ctx, a], mu[ctx, a], q_logged=q[ctx, a],
                             v_target=(pi * q).sum(axis=1)[ctx], n_boot=200, seed=seed)
        for k, e in est.items():
            assert e.low <= e.value <= e.high
            hits[k] += e.covers(truth)
    for k, h in hits.items():
        assert 0.85 * runs <= h <= runs, (k, h)


def test_dr_with_the_true_reward_model_has_smaller_intervals() -> None:
    mu, pi, means, _ = _bandit(2)
    ctx, a, r = _logs(5, 2000, mu, means)
    est = step_estimates(r, pi[ctx, a], mu[ctx, a], q_logged=means[ctx, a],
                         v_target=(pi * means).sum(axis=1)[ctx], n_boot=300)
    assert est["dr"].high - est["dr"].low < est["ips"].high - est["ips"].low


def test_clipping_weights_and_effective_sample_size() -> None:
    w, clipped = importance_weights(np.array([0.5, 0.9, 0.1]), np.array([0.5, 0.1, 0.1]),
                                    clip=4.0)
    assert w.tolist() == [1.0, 4.0, 1.0] and clipped == 1
    assert effective_sample_size(np.ones(10)) == pytest.approx(10.0)
    assert effective_sample_size(np.array([0.0, 0.0, 3.0])) == pytest.approx(1.0)
    assert effective_sample_size(np.zeros(3)) == 0.0
    with pytest.raises(ValueError, match="logging propensities"):
        importance_weights(np.array([0.5]), np.array([0.0]))
    with pytest.raises(ValueError, match="target probabilities"):
        importance_weights(np.array([1.5]), np.array([0.5]))
    with pytest.raises(ValueError, match="no logged decisions"):
        step_estimates(np.array([]), np.array([]), np.array([]))
    est = step_estimates(np.array([1.0, 0.0]), np.array([1.0, 0.0]), np.array([0.5, 0.5]),
                         clip=1.5, n_boot=0)
    assert est["ips"].value == pytest.approx(0.75) and est["ips"].clipped == 1
    assert np.isnan(est["ips"].low) and est["ips"].to_dict()["low"] is None


def test_grouped_bootstrap_is_wider_for_correlated_rows() -> None:
    # Every group repeats one reward 10 times: resampling rows pretends 10x the data.
    rng = np.random.default_rng(0)
    r = np.repeat(rng.normal(size=50), 10)
    p = np.full(len(r), 0.5)
    rows = step_estimates(r, p, p, n_boot=300)["ips"]
    groups = step_estimates(r, p, p, groups=np.repeat(np.arange(50), 10), n_boot=300)["ips"]
    assert (groups.high - groups.low) > 2 * (rows.high - rows.low)


def test_trajectory_estimators_on_a_two_step_mdp() -> None:
    """Two steps, two actions, the second step's reward depends on the first action;
    every episode lasts two steps unless action 0 is taken first (then it ends)."""
    mu = np.array([0.5, 0.5])
    pi = np.array([0.2, 0.8])
    # Return under π: step 1 reward a1; if a1 = 1 a second step with reward 2·a2.
    truth = pi[1] * 1.0 + pi[1] * (pi[1] * 2.0)
    vals: dict[str, list[float]] = {"pdis": [], "wpdis": [], "dr": []}
    for seed in range(300):
        rng = np.random.default_rng(seed)
        e = 200
        a1 = (rng.random(e) < mu[1]).astype(int)
        a2 = (rng.random(e) < mu[1]).astype(int)
        mask = np.stack([np.ones(e, bool), a1 == 1], axis=1)
        rewards = np.stack([a1 * 1.0, 2.0 * a2], axis=1)
        ratios = np.stack([pi[a1] / mu[a1], pi[a2] / mu[a2]], axis=1)
        q = np.full((e, 2), 0.5)
        v = np.full((e, 2), 0.5)
        est = trajectory_estimates(rewards, ratios, mask, q_logged=q, v_target=v, n_boot=0)
        for k, x in est.items():
            vals[k].append(x.value)
    for k, v_ in vals.items():
        arr = np.asarray(v_)
        se = arr.std(ddof=1) / np.sqrt(len(arr))
        assert abs(arr.mean() - truth) < 4 * se + 0.01, (k, arr.mean(), truth)
    with pytest.raises(ValueError, match="no logged episodes"):
        trajectory_estimates(np.zeros((0, 2)), np.ones((0, 2)), np.ones((0, 2), bool))


def _policy(strategy: str = "categorical", **kw: object):  # type: ignore[no-untyped-def]
    pol = init_policy(PolicyConfig(12, max_len=6, hidden=8, heads=2, blocks=1), seed=3)
    pol.exploration = replace(pol.exploration, strategy=strategy, **kw)
    return pol


@pytest.mark.parametrize(("strategy", "kw"), [
    ("categorical", {}), ("categorical", {"mask_history": True}),
    ("epsilon", {"epsilon": 0.3}), ("epsilon", {"epsilon": 0.3, "mask_history": True}),
])
def test_candidate_distribution_matches_act_arrays(strategy: str, kw: dict) -> None:
    pol = _policy(strategy, **kw)
    hist = np.array([[PAD, PAD, PAD, 1, 2, 3], [PAD] * 6, [4, 5, 6, 7, 8, 9]], dtype=np.int64)
    dist = candidate_distribution(pol, hist)
    assert np.allclose(dist.sum(axis=1), 1.0)
    if kw.get("mask_history"):
        assert dist[0, [1, 2, 3]].sum() == 0.0
    rng = np.random.default_rng(0)
    counts = np.zeros_like(dist)
    for _ in range(3000):
        items, props = pol.act_arrays(hist, None, explore=True, rng=rng)
        # The propensity the service logs is exactly the candidate's probability.
        assert np.allclose(props, dist[np.arange(3), items])
        counts[np.arange(3), items] += 1
    assert np.abs(counts / 3000 - dist).max() < 0.035


def test_greedy_candidates_and_softening() -> None:
    pol = _policy("greedy")
    hist = np.array([[PAD, 1, 2]], dtype=np.int64)
    dist = candidate_distribution(pol, hist)
    items, _ = pol.act_arrays(hist, None, explore=True, rng=np.random.default_rng(0))
    assert dist[0, items[0]] == 1.0 and dist.sum() == 1.0
    soft = candidate_distribution(pol, hist, soften=0.12)
    assert soft[0, items[0]] == pytest.approx(0.88 + 0.01)
    assert soft.min() == pytest.approx(0.01)
    eps = greedy_variant(_policy(), 0.25)
    assert eps.exploration.strategy == "epsilon"
    assert candidate_distribution(eps, hist).max() == pytest.approx(0.75 + 0.25 / 12)
    with pytest.raises(ValueError, match="soften"):
        candidate_distribution(pol, hist, soften=2.0)


def test_direct_models() -> None:
    rng = np.random.default_rng(0)
    users = rng.integers(0, 30, 5000)
    items = rng.integers(0, 12, 5000)
    bu, bi = rng.normal(size=30), rng.normal(size=12)
    r = 1.0 + bu[users] + bi[items] + rng.normal(scale=0.1, size=5000)
    model = AdditiveRewardModel(12, lam=1.0).fit(users, items, r)
    pred = model.predict(np.zeros((30, 1), dtype=np.int64), np.arange(30))
    truth = 1.0 + bu[:, None] + bi[None, :]
    assert np.abs(pred - truth).max() < 0.15
    assert model.predict(np.zeros((1, 1), dtype=np.int64), np.array([999])).shape == (1, 12)
    pol = _policy()
    hist = np.tile(np.array([[PAD, 1, 2]], dtype=np.int64), (40, 1))
    q = CriticModel(pol).predict(hist, np.zeros(40, dtype=np.int64))
    assert q.shape == (40, 12) and np.isfinite(q).all()
    acts = rng.integers(0, 12, 40)
    for direct in ("reward-model", "critic"):
        p, qa, v = target_and_cross_direct(pol, hist, np.arange(40), acts, rng.random(40),
                                           np.arange(40) % 5, direct=direct)
        assert p.shape == qa.shape == v.shape == (40,)
    with pytest.raises(ValueError, match="direct model"):
        target_and_cross_direct(pol, hist, np.arange(40), acts, rng.random(40),
                                np.arange(40), direct="oracle")
    with pytest.raises(ValueError, match="outside the candidate's catalogue"):
        target_and_cross_direct(pol, hist[:1], np.arange(1), np.array([12]), np.ones(1),
                                np.arange(1))
