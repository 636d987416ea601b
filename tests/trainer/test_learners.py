"""Learners: a step lowers the loss on a fixed batch; factory; replay; snapshots."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policy.config import PolicyConfig
from policy.types import Transition
from trainer.batch import TransitionBatch
from trainer.learners import PAPER_A2C, available_learners, make_learner
from trainer.replay import ReplayBuffer

CFG = PolicyConfig(num_items=25, max_len=6, hidden=16, heads=2, blocks=1, dropout=0.0)


def _transitions(n: int, seed: int) -> list[Transition]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        hist = tuple(int(x) for x in rng.integers(0, CFG.num_items, size=rng.integers(0, 9)))
        action = int(rng.integers(0, CFG.num_items))
        out.append(
            Transition(
                event_id=f"e{i}", user_id=0, history=hist, action=action,
                reward=float(action % 5), done=bool(rng.random() < 0.2),
            )
        )
    return out


def _batch(n: int = 48, seed: int = 0) -> TransitionBatch:
    batch = TransitionBatch.from_transitions(_transitions(n, seed), CFG.max_len)
    batch.returns = batch.rewards * 2.0
    return batch


@pytest.mark.parametrize(
    ("method", "key"), [("a2c", "critic_loss"), ("a2c", "loss"), ("dqn", "loss"), ("pg", "loss")]
)
def test_updates_reduce_the_loss_on_a_fixed_batch(method: str, key: str) -> None:
    torch.manual_seed(0)
    # No target network drift for A2C: measure the loss the optimizer actually sees.
    hyper = {"target_tau": 0.0} if method == "a2c" else {}
    learner = make_learner(method, CFG, seed=0, lr=3e-3, **hyper)
    batch = _batch()
    # Terminal transitions: the TD targets are the rewards, so the objective is fixed and
    # gradient steps must lower it (bootstrapped targets move with the network).
    batch.dones = torch.ones_like(batch.dones)
    before = learner.loss(batch)[key]
    first = learner.update(batch)
    assert np.isfinite(list(first.values())).all()
    for _ in range(30):
        learner.update(batch)
    after = learner.loss(batch)[key]
    assert after < before, (method, key, before, after)
    assert learner.steps == 31


def test_a2c_losses_follow_equations_6_to_10() -> None:
    learner = make_learner("a2c", CFG, seed=1, target_tau=0.0, gamma=0.5, **PAPER_A2C)
    batch = _batch(8)
    net = learner.net  # type: ignore[attr-defined]
    net.eval()
    with torch.no_grad():
        logits, q = net(batch.histories, batch.user_ids)
        q_next = net.q_values(batch.next_histories, batch.user_ids).max(1).values
        y = batch.rewards + 0.5 * (1 - batch.dones) * q_next
        q_sa = q[torch.arange(8), batch.actions]
        adv = y - q_sa
        logp = torch.log_softmax(logits, 1)[torch.arange(8), batch.actions]
    got = learner.loss(batch)
    assert got["critic_loss"] == pytest.approx(float((adv**2).mean()), rel=1e-5)
    assert got["actor_loss"] == pytest.approx(float(-(logp * adv).mean()), rel=1e-5, abs=1e-6)
    assert got["loss"] == pytest.approx(got["actor_loss"] + got["critic_loss"], rel=1e-5)


def test_factory_rejects_unknown_names() -> None:
    assert {"a2c", "dqn", "pg"} <= set(available_learners())
    with pytest.raises(KeyError, match="unknown learner"):
        make_learner("sarsa", CFG, seed=0)
    with pytest.raises(TypeError, match="unknown hyperparameters learning_rate"):
        make_learner("a2c", CFG, seed=0, learning_rate=0.1)


def test_snapshot_is_independent_and_init_is_copied() -> None:
    learner = make_learner("a2c", CFG, seed=0)
    snap = learner.snapshot()
    weight = snap.theta.encoder.item_emb.weight.clone()
    learner.update(_batch())
    assert torch.equal(snap.theta.encoder.item_emb.weight, weight)
    assert not torch.equal(learner.snapshot().theta.encoder.item_emb.weight, weight)
    child = make_learner("pg", CFG, seed=9, init=snap)
    assert torch.equal(child.snapshot().theta.encoder.item_emb.weight, weight)
    assert child.snapshot().metadata["parent_version"] == snap.version
    assert make_learner("dqn", CFG, seed=0).snapshot().head == "q"


def test_replay_buffer_wraps_and_samples() -> None:
    buf = ReplayBuffer(capacity=10, max_len=CFG.max_len)
    items = _transitions(25, 3)
    buf.add_transitions(items[:7])
    buf.add_transitions(items[7:])
    assert len(buf) == 10
    batch = buf.sample(64, np.random.default_rng(0))
    assert batch.histories.shape == (64, CFG.max_len)
    kept = {t.action for t in items[15:]}
    assert set(batch.actions.tolist()) <= kept
    # next_history = history + action, right-aligned.
    assert torch.equal(batch.next_histories[:, -1], batch.actions)
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(5, 3).sample(1, np.random.default_rng(0))


def test_a2c_expected_advantage_uses_the_policy_weighted_q() -> None:
    learner = make_learner("a2c", CFG, seed=2, target_tau=0.0, gamma=0.5,
                           **{**PAPER_A2C, "advantage": "expected"})
    batch = _batch(8)
    net = learner.net  # type: ignore[attr-defined]
    net.eval()
    with torch.no_grad():
        logits, q = net(batch.histories, batch.user_ids)
        q_next = net.q_values(batch.next_histories, batch.user_ids).max(1).values
        y = batch.rewards + 0.5 * (1 - batch.dones) * q_next
        pi = torch.softmax(logits, 1)
        adv = y - (pi * q).sum(1)
        logp = torch.log(pi)[torch.arange(8), batch.actions]
    got = learner.loss(batch)
    assert got["actor_loss"] == pytest.approx(float(-(logp * adv).mean()), rel=1e-4, abs=1e-6)
    with pytest.raises(ValueError, match="advantage"):
        make_learner("a2c", CFG, seed=0, advantage="gae")


def test_pg_without_returns_uses_the_immediate_reward() -> None:
    learner = make_learner("pg", CFG, seed=0, normalize=False, baseline="none")
    batch = _batch(16)
    with_returns = learner.loss(batch)
    batch.returns = None
    plain = learner.loss(batch)
    assert plain["return_mean"] == pytest.approx(float(batch.rewards.mean()))
    assert with_returns["return_mean"] == pytest.approx(2.0 * plain["return_mean"])
    # Without baseline or normalisation the loss scales with the returns.
    assert with_returns["pg_loss"] == pytest.approx(2.0 * plain["pg_loss"], rel=1e-5)


def test_pg_with_history_masking_learns_the_pi_that_acted() -> None:
    """With ``mask_history`` PG's π is renormalised over items outside the state, as the
    acting policy's was (unmasked, the logits of history items that never act grow and
    log π(a|s) of the chosen items falls without bound)."""
    batch = _batch(16)
    learner = make_learner("pg", CFG, seed=0)
    learner.mask_history = True
    masked_loss = learner.loss(batch)
    mask = learner.history_mask(batch.histories)
    assert mask is not None and bool(mask.any())
    hist = set(batch.histories[batch.histories >= 0].tolist())
    assert set(torch.nonzero(mask)[:, 1].tolist()) == hist
    with torch.no_grad():
        log_pi = learner.net.logits(batch.histories, batch.user_ids).masked_fill(
            mask, -1e9).log_softmax(-1)
    entropy = -(log_pi.exp() * log_pi).sum(1).mean()
    assert masked_loss["entropy"] == pytest.approx(float(entropy), rel=1e-5)
    learner.mask_history = False
    assert learner.loss(batch)["entropy"] > masked_loss["entropy"]  # more items share π
