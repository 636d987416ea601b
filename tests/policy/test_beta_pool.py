"""MixedPolicy's ``beta_pool``: π_β restricted to a pool of items (the GenEE service mode's
candidate set), on the eager and the frozen path, through draws, sources, propensities and
checkpoints; invalid pools are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from policy.checkpoint import (
    CheckpointError,
    build_network,
    load_checkpoint,
    policy_from_bytes,
    policy_to_bytes,
    save_checkpoint,
)
from policy.config import PolicyConfig
from policy.mixed import MixedPolicy
from policy.types import pad_histories
from trainer.ope.candidate import greedy_variant

CFG = PolicyConfig(num_items=40, max_len=8, hidden=16, heads=2, blocks=1, num_users=5)
HISTORIES = [[], [3], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [39, 0]]
POOL = (4, 11, 17, 25, 38)


def _ap(alpha: float, pool: tuple[int, ...] | None = POOL) -> MixedPolicy:
    return MixedPolicy(build_network(CFG, seed=1), build_network(CFG, seed=2), alpha=alpha,
                       scheme="ap", beta_pool=pool, seed=0)


@pytest.mark.parametrize("frozen", [False, True])
def test_p_beta_is_the_renormalised_restriction_to_the_pool(frozen: bool) -> None:
    free, pooled = _ap(0.3, None), _ap(0.3)
    if frozen:
        free.freeze_for_serving()
        pooled.freeze_for_serving()
    padded = pad_histories(HISTORIES, CFG.max_len)
    users = np.array([0, 1, 4, 2])
    p_theta, p_beta = pooled.component_probs(padded, users)
    ref_theta, ref_beta = free.component_probs(padded, users)
    assert p_beta is not None and ref_beta is not None
    outside = np.setdiff1d(np.arange(CFG.num_items), POOL)
    np.testing.assert_allclose(p_beta.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(p_beta[:, outside] == 0.0)
    pool = list(POOL)
    expected = ref_beta[:, pool] / ref_beta[:, pool].sum(axis=1, keepdims=True)
    np.testing.assert_allclose(p_beta[:, pool], expected, rtol=1e-9)
    np.testing.assert_array_equal(p_theta, ref_theta)  # θ keeps the whole catalogue
    np.testing.assert_allclose(pooled.probs(padded, users), 0.7 * p_theta + 0.3 * p_beta,
                               atol=1e-15)


def test_beta_draws_stay_in_the_pool_and_propensities_are_the_restricted_mixture() -> None:
    policy = _ap(0.5)
    rng = np.random.default_rng(7)
    histories = HISTORIES * 50
    users = [0, 1, 2, 3] * 50
    slates = policy.act_batch(histories, k=1, user_ids=users, rng=rng)
    mix = policy.probs(pad_histories(histories, CFG.max_len), np.asarray(users))
    sources: dict[str, set[int]] = {"theta": set(), "beta": set()}
    for row, slate in enumerate(slates):
        item, source = slate.items[0], slate.sources[0]
        sources[source].add(item)
        assert slate.propensities[0] == pytest.approx(mix[row, item], rel=1e-9)
    assert sources["beta"] and sources["beta"] <= set(POOL)
    assert sources["theta"] - set(POOL), "θ-sourced items may lie outside the pool"
    # α = 1: every item comes from β, hence from the pool (slates of several items too).
    for slate in _ap(1.0).act_batch(HISTORIES, k=3, rng=np.random.default_rng(1)):
        assert set(slate.items) <= set(POOL) and set(slate.sources) == {"beta"}


def test_a_row_whose_pool_mass_underflows_is_uniform_over_the_pool() -> None:
    policy = _ap(0.5)
    p_beta = np.zeros((2, CFG.num_items))
    p_beta[0, 0] = 1.0  # all mass outside the pool
    p_beta[1, list(POOL)] = [0.1, 0.2, 0.3, 0.2, 0.2]
    out = policy._restrict(p_beta)
    np.testing.assert_allclose(out[0, list(POOL)], 1 / len(POOL))
    np.testing.assert_allclose(out[1, list(POOL)], [0.1, 0.2, 0.3, 0.2, 0.2])
    assert out[:, 0].sum() == 0.0


def test_the_pool_is_normalised_and_survives_checkpoints(tmp_path: Path) -> None:
    policy = _ap(0.4, (38, 4, 11, 4, 25, 17))
    assert policy.beta_pool == POOL  # sorted, duplicates dropped
    back = load_checkpoint(save_checkpoint(policy, tmp_path / "ckpt"))
    assert back.beta_pool == POOL
    assert json.loads((tmp_path / "ckpt" / "meta.json").read_text())["beta_pool"] == list(POOL)
    assert policy_from_bytes(policy_to_bytes(policy)).beta_pool == POOL
    assert greedy_variant(policy, 0.1).beta_pool == POOL
    # Without a pool nothing is written and nothing is restricted.
    free = _ap(0.4, None)
    assert free.beta_pool is None and policy_from_bytes(policy_to_bytes(free)).beta_pool is None
    save_checkpoint(free, tmp_path / "free")
    assert "beta_pool" not in json.loads((tmp_path / "free" / "meta.json").read_text())


def test_invalid_pools_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        _ap(0.5, ())
    with pytest.raises(ValueError, match=r"outside the catalogue \[0, 40\)"):
        _ap(0.5, (3, 40))
    with pytest.raises(ValueError, match="outside the catalogue"):
        _ap(0.5, (-1, 3))
    with pytest.raises(ValueError, match="integer"):
        MixedPolicy(build_network(CFG, seed=1), build_network(CFG, seed=2), alpha=0.5,
                    scheme="ap", beta_pool=[1.5, 2.0])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="no beta network"):
        MixedPolicy(build_network(CFG, seed=1), beta_pool=[1, 2])
    policy = _ap(0.5)
    with pytest.raises(ValueError, match="empty"):
        policy.beta_pool = []
    assert policy.beta_pool == POOL  # a refused assignment changes nothing
    # A checkpoint whose pool does not fit its catalogue does not load.
    save_checkpoint(policy, tmp_path / "ckpt")
    meta_path = tmp_path / "ckpt" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "beta_pool": [1, 99]}))
    with pytest.raises(ValueError, match="outside the catalogue"):
        load_checkpoint(tmp_path / "ckpt")
    meta_path.write_text(json.dumps({**meta, "beta_pool": 3}))
    with pytest.raises(CheckpointError, match="beta_pool must be a list"):
        load_checkpoint(tmp_path / "ckpt")
