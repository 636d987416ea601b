"""Checkpoints: bit-for-bit round trips, catalogue checks, atomic replacement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from policy.checkpoint import (
    CheckpointError,
    build_network,
    init_policy,
    load_checkpoint,
    policy_from_bytes,
    policy_to_bytes,
    save_checkpoint,
)
from policy.config import PolicyConfig
from policy.exploration import ExplorationConfig
from policy.mixed import MixedPolicy

CFG = PolicyConfig(num_items=30, max_len=6, hidden=16, heads=2, blocks=1, num_users=3)


def _ap() -> MixedPolicy:
    return MixedPolicy(
        build_network(CFG, seed=1), build_network(CFG, seed=2), alpha=0.25, scheme="ap",
        version=7, metadata={"parent_version": 6, "events_learned": 123},
        exploration=ExplorationConfig(strategy="epsilon", epsilon=0.2),
    )


def _same(a: MixedPolicy, b: MixedPolicy) -> None:
    assert (a.version, a.alpha, a.scheme, a.head, a.config) == (
        b.version, b.alpha, b.scheme, b.head, b.config
    )
    assert a.exploration == b.exploration
    assert a.metadata == b.metadata
    for net_a, net_b in ((a.theta, b.theta), (a.beta, b.beta)):
        assert net_a is not None and net_b is not None
        sa, sb = net_a.state_dict(), net_b.state_dict()
        assert sa.keys() == sb.keys()
        for key in sa:
            assert sa[key].dtype == sb[key].dtype
            assert torch.equal(sa[key], sb[key]), key  # bit for bit
    hist = np.array([[-1, -1, 3, 4, 5, 6], [-1] * 6])
    np.testing.assert_array_equal(a.probs(hist, np.array([0, 9])), b.probs(hist, np.array([0, 9])))


def test_directory_round_trip_is_exact(tmp_path: Path) -> None:
    policy = _ap()
    path = save_checkpoint(policy, tmp_path / "v7")
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json", "meta.json", "weights.safetensors"
    ]
    _same(policy, load_checkpoint(path, expected_num_items=30))


def test_bytes_round_trip_is_exact() -> None:
    policy = _ap()
    blob = policy_to_bytes(policy)
    assert blob.startswith(b"IALPPOL1")
    _same(policy, policy_from_bytes(blob))
    with pytest.raises(CheckpointError, match="magic"):
        policy_from_bytes(b"\x80\x04pickle")


def test_mismatched_catalogue_is_refused(tmp_path: Path) -> None:
    path = save_checkpoint(init_policy(CFG, seed=0), tmp_path / "ck")
    with pytest.raises(CheckpointError, match="30 items but the catalogue has 31"):
        load_checkpoint(path, expected_num_items=31)
    with pytest.raises(CheckpointError, match="30 items"):
        policy_from_bytes(policy_to_bytes(init_policy(CFG, seed=0)), expected_num_items=300)
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path / "nowhere")


def test_overwrite_replaces_atomically_without_leftovers(tmp_path: Path) -> None:
    first, second = init_policy(CFG, seed=0), init_policy(CFG, seed=1)
    save_checkpoint(first, tmp_path / "current")
    save_checkpoint(second, tmp_path / "current")
    assert [p.name for p in tmp_path.iterdir()] == ["current"]
    loaded = load_checkpoint(tmp_path / "current")
    weight = loaded.theta.encoder.item_emb.weight
    assert torch.equal(weight, second.theta.encoder.item_emb.weight)
    assert not torch.equal(weight, first.theta.encoder.item_emb.weight)


def test_init_policy_is_seeded() -> None:
    a, b, c = init_policy(CFG, seed=5), init_policy(CFG, seed=5), init_policy(CFG, seed=6)
    assert torch.equal(a.theta.encoder.item_emb.weight, b.theta.encoder.item_emb.weight)
    assert not torch.equal(a.theta.encoder.item_emb.weight, c.theta.encoder.item_emb.weight)
    assert a.scheme == "none" and a.version == 0
