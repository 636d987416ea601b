"""Greedy, ε-greedy and categorical exploration."""

from __future__ import annotations

import numpy as np
import pytest

from policy.exploration import ExplorationConfig, draw_slates


def _probs(rng: np.random.Generator, b: int, n: int) -> np.ndarray:
    p = rng.dirichlet(np.ones(n), size=b)
    return p


def test_greedy_takes_the_top_k_in_order() -> None:
    p = np.array([[0.1, 0.4, 0.2, 0.3], [0.25, 0.25, 0.3, 0.2]])
    items, props = draw_slates(
        p, np.ones_like(p, dtype=bool), 3, strategy="greedy", epsilon=0.0,
        rng=np.random.default_rng(0),
    )
    assert items.tolist() == [[1, 3, 2], [2, 0, 1]]
    assert (props == 1.0).all()


def test_epsilon_zero_equals_greedy() -> None:
    rng = np.random.default_rng(0)
    p = _probs(rng, 16, 50)
    allowed = rng.random((16, 50)) > 0.2
    g = draw_slates(p, allowed, 4, strategy="greedy", epsilon=0.0, rng=np.random.default_rng(1))
    e = draw_slates(p, allowed, 4, strategy="epsilon", epsilon=0.0, rng=np.random.default_rng(2))
    np.testing.assert_array_equal(g[0], e[0])
    np.testing.assert_array_equal(g[1], e[1])


def test_epsilon_one_is_uniform_over_allowed() -> None:
    p = np.tile(np.array([[0.97, 0.01, 0.01, 0.01, 0.0]]), (20_000, 1))
    allowed = np.ones_like(p, dtype=bool)
    allowed[:, 4] = False
    items, props = draw_slates(
        p, allowed, 1, strategy="epsilon", epsilon=1.0, rng=np.random.default_rng(3)
    )
    freq = np.bincount(items[:, 0], minlength=5) / len(items)
    np.testing.assert_allclose(freq[:4], 0.25, atol=0.015)
    assert freq[4] == 0.0
    np.testing.assert_allclose(props, 0.25)


def test_epsilon_propensities() -> None:
    p = np.tile(np.array([[0.1, 0.6, 0.3]]), (4, 1))
    items, props = draw_slates(
        p, np.ones_like(p, dtype=bool), 1, strategy="epsilon", epsilon=0.3,
        rng=np.random.default_rng(4),
    )
    expected = np.where(items[:, 0] == 1, 0.7 + 0.1, 0.1)
    np.testing.assert_allclose(props[:, 0], expected)


def test_categorical_frequencies_follow_probabilities() -> None:
    probs = np.array([0.5, 0.25, 0.15, 0.1, 0.0])
    n = 40_000
    p = np.tile(probs, (n, 1))
    items, props = draw_slates(
        p, np.ones_like(p, dtype=bool), 1, strategy="categorical", epsilon=0.0,
        rng=np.random.default_rng(5),
    )
    freq = np.bincount(items[:, 0], minlength=5) / n
    # 4 standard errors of a binomial proportion at n = 40k is at most 0.01.
    np.testing.assert_allclose(freq, probs, atol=0.01)
    np.testing.assert_allclose(props[:, 0], probs[items[:, 0]])


def test_categorical_slates_sample_without_replacement() -> None:
    probs = np.array([[0.7, 0.2, 0.1]])
    items, props = draw_slates(
        np.tile(probs, (5000, 1)), np.ones((5000, 3), dtype=bool), 2,
        strategy="categorical", epsilon=0.0, rng=np.random.default_rng(6),
    )
    assert (items[:, 0] != items[:, 1]).all()
    # Second pick is renormalised over the remaining items.
    first0 = items[:, 0] == 0
    np.testing.assert_allclose(props[first0, 1], np.where(items[first0, 1] == 1, 2 / 3, 1 / 3))
    # P(second = 0) = 0.2·0.7/0.8 + 0.1·0.7/0.9
    assert np.mean(items[:, 1] == 0) == pytest.approx(0.2 * 0.7 / 0.8 + 0.1 * 0.7 / 0.9, abs=0.03)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="strategy"):
        ExplorationConfig(strategy="softmax")
    with pytest.raises(ValueError, match="epsilon"):
        ExplorationConfig(strategy="epsilon", epsilon=2.0)
    with pytest.raises(ValueError, match="distinct"):
        draw_slates(np.ones((1, 3)) / 3, np.array([[True, False, False]]), 2,
                    strategy="greedy", epsilon=0.0, rng=np.random.default_rng(0))


@pytest.mark.parametrize("strategy", ["greedy", "epsilon", "categorical"])
def test_large_catalogue_slates_respect_masks_and_mass(strategy: str) -> None:
    rng = np.random.default_rng(7)
    n = 5000
    p = _probs(rng, 6, n)
    p[:, :3] = 0.0  # zero-probability items may still fill a slate, but only if allowed
    p /= p.sum(axis=1, keepdims=True)
    allowed = rng.random((6, n)) > 0.5
    items, props = draw_slates(p, allowed, 20, strategy=strategy, epsilon=0.3, rng=rng)
    for row in range(6):
        assert len(set(items[row].tolist())) == 20
        assert allowed[row, items[row]].all()
    assert ((props > 0) & (props <= 1)).all()
    if strategy == "greedy":
        masked = np.where(allowed, p, -1.0)
        expected = np.argsort(-masked, axis=1, kind="stable")[:, :20]
        np.testing.assert_array_equal(items, expected)


def test_categorical_falls_back_to_uniform_over_allowed_when_mass_is_zero() -> None:
    p = np.array([[1.0, 0.0, 0.0, 0.0, 0.0]])
    allowed = np.array([[False, True, True, False, True]])
    items, props = draw_slates(p, allowed, 3, strategy="categorical", epsilon=0.0,
                               rng=np.random.default_rng(0))
    assert sorted(items[0].tolist()) == [1, 2, 4]
    np.testing.assert_allclose(props[0], [1 / 3, 1 / 2, 1.0])


def test_propensities_never_leave_the_unit_interval() -> None:
    # Renormalising the remaining mass slate position by slate position is where rounding
    # pushed a last propensity to 1 + 2e-16 on some BLAS kernels; across strategies,
    # peaked and flat distributions and long slates, every propensity stays in [0, 1].
    rng = np.random.default_rng(7)
    for strategy in ("categorical", "epsilon"):
        for sharp in (0.01, 1.0, 100.0):
            p = rng.dirichlet(np.full(40, sharp), size=32)
            allowed = rng.random((32, 40)) > 0.05
            for k in (1, 5, int(allowed.sum(axis=1).min())):
                _, props = draw_slates(
                    p, allowed, k, strategy=strategy, epsilon=0.3, rng=np.random.default_rng(k)
                )
                assert props.min() >= 0.0 and props.max() <= 1.0, (strategy, sharp, k)


def test_clip_probability_pulls_rounding_back_inside() -> None:
    from policy.exploration import clip_probability

    out = clip_probability(np.array([1.0000000000000002, -1e-18, 0.5]))
    assert out.tolist() == [1.0, 0.0, 0.5]
