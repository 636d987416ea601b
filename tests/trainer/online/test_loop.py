"""The online trainer against a real Redis: updates every N transitions, α annealing,
publication with a version window, exactly-once learning, restart from disk, following a
rollback, dead-lettering transitions outside the catalogue."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from policy.types import Transition
from trainer.online import TrainerService, TrainerSettings, TrainerState
from trainer.transport.bus import RedisStreamBus, transition_to_json
from trainer.transport.keys import RedisKeys
from trainer.transport.memory_bus import InMemoryBus
from trainer.transport.publication import PublishedPolicies

N_ITEMS = 30


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_url)
    yield c
    await c.aclose()


def _settings(tmp_path: Path, ns: str, **kw: Any) -> TrainerSettings:
    base: dict[str, Any] = dict(
        redis_url="unused", namespace=ns, state_dir=tmp_path / "state", num_items=N_ITEMS,
        max_len=8, update_every=8, flush_idle_s=0, alpha_steps=4, keep_versions=3,
        consumer="t1", block_ms=10, learner_options={"lr": 1e-2})
    base.update(kw)
    return TrainerSettings(**base)


def _trainer(client: aioredis.Redis, settings: TrainerSettings) -> TrainerService:
    keys = RedisKeys(settings.namespace)
    bus = RedisStreamBus(client, keys, consumer=settings.consumer)
    policies = PublishedPolicies(client, keys, keep=settings.keep_versions)
    return TrainerService(settings, bus, policies,
                          stats_client=client)


def _t(i: int) -> Transition:
    return Transition(event_id=f"ev{i}", user_id=i % 5, history=(i % N_ITEMS, 3),
                      action=(i * 7) % N_ITEMS, reward=float(i % 2), done=i % 6 == 5,
                      propensity=0.1, policy_version=1, source="theta")


async def _drain(trainer: TrainerService, rounds: int = 20) -> None:
    for _ in range(rounds):
        if not await trainer.step(await trainer.bus.read(64, 10)):
            break


async def test_updates_publish_versions_with_rising_alpha_exactly_once(
        client: aioredis.Redis, tmp_path: Path, redis_namespace: str) -> None:
    trainer = _trainer(client, _settings(tmp_path, redis_namespace))
    await trainer.setup()
    reg = trainer.policies
    assert await reg.current_version() == 1  # the starting point is published first
    first = await reg.load(1)
    assert first.scheme == "ap" and first.alpha == 0.0
    for i in range(20):
        await trainer.bus.publish(_t(i))
    await trainer.bus.publish(_t(3))  # duplicate feedback: never enqueued twice
    keys = RedisKeys(redis_namespace)
    await client.xadd(keys.stream, {"t": transition_to_json(_t(4))})  # bypassing the API
    await _drain(trainer)
    # 20 unique events, update_every 8: two updates, 4 left in the buffer.
    assert trainer.state.updates == 2 and trainer.state.events_learned == 16
    assert len(trainer.buffer) == 4 and len(await trainer.bus.buffered()) == 4
    assert await reg.current_version() == 3
    assert [(await reg.meta(v))["alpha"] for v in (1, 2, 3)] == [0.0, 0.25, 0.5]
    latest = await reg.load(3)
    assert latest.metadata["parent_version"] == 2 and latest.metadata["events_learned"] == 16
    # β moved, θ stayed frozen.
    import torch

    for a, b in zip(first.theta.parameters(), latest.theta.parameters(), strict=True):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in
               zip(first.beta.parameters(), latest.beta.parameters(), strict=True))
    assert trainer.metrics.duplicates._value.get() == 1
    stats = await trainer.bus.stats()
    assert stats["events_buffered"] == 20 and stats["events_learned"] == 16
    # Four more events: the third update consumes exactly the leftovers.
    for i in range(20, 24):
        await trainer.bus.publish(_t(i))
    await _drain(trainer)
    assert trainer.state.events_learned == 24 and trainer.buffer == []
    assert await reg.versions() == [2, 3, 4]  # keep_versions=3


async def test_idle_flush_learns_a_partial_batch(client: aioredis.Redis, tmp_path: Path,
                                                 redis_namespace: str) -> None:
    trainer = _trainer(client, _settings(tmp_path, redis_namespace, flush_idle_s=0.01))
    await trainer.setup()
    for i in range(3):
        await trainer.bus.publish(_t(i))
    await trainer.step(await trainer.bus.read(64, 10))
    import asyncio

    await asyncio.sleep(0.02)
    await trainer.step([])
    assert trainer.state.events_learned == 3 and trainer.state.updates == 1


async def test_restart_continues_from_disk_version_alpha_and_buffer(
        client: aioredis.Redis, tmp_path: Path, redis_namespace: str) -> None:
    settings = _settings(tmp_path, redis_namespace)
    trainer = _trainer(client, settings)
    await trainer.setup()
    for i in range(12):
        await trainer.bus.publish(_t(i))
    await _drain(trainer)
    assert trainer.state == TrainerState(version=2, updates=1, events_learned=8)
    saved = TrainerState.load(settings.state_dir)
    assert saved is not None
    # The saved state names the transitions it learned, to trim them by id after a crash.
    assert saved.consumed_ids == [f"ev{i}" for i in range(8)]
    assert dataclasses.replace(saved, consumed_ids=[]) == trainer.state

    again = _trainer(client, settings)
    await again.setup()
    assert again.state == TrainerState(version=2, updates=1, events_learned=8)
    assert [t.event_id for t in again.buffer] == ["ev8", "ev9", "ev10", "ev11"]
    assert await again.policies.current_version() == 2  # nothing republished
    for i in range(12, 16):
        await again.bus.publish(_t(i))
    await _drain(again)
    assert again.state.version == 3 and again.state.updates == 2
    meta = await again.policies.meta(3)
    assert meta["alpha"] == 0.5 and meta["parent_version"] == 2
    assert meta["events_learned"] == 16


async def test_trainer_follows_a_rollback(client: aioredis.Redis, tmp_path: Path,
                                          redis_namespace: str) -> None:
    trainer = _trainer(client, _settings(tmp_path, redis_namespace))
    await trainer.setup()
    for i in range(16):
        await trainer.bus.publish(_t(i))
    await _drain(trainer)
    assert await trainer.policies.current_version() == 3
    assert await trainer.policies.rollback() == 2
    for i in range(16, 24):
        await trainer.bus.publish(_t(i))
    await _drain(trainer)
    meta = await trainer.policies.meta(4)
    assert meta["parent_version"] == 2
    assert meta["updates"] == 2 and meta["alpha"] == 0.5  # continues from v2's step


async def test_transitions_outside_the_catalogue_are_dead_lettered(
        client: aioredis.Redis, tmp_path: Path, redis_namespace: str) -> None:
    trainer = _trainer(client, _settings(tmp_path, redis_namespace))
    await trainer.setup()
    bad = Transition(event_id="bad", user_id=0, history=(1,), action=N_ITEMS + 5,
                     reward=1.0, done=False)
    await trainer.bus.publish(bad)
    await trainer.bus.publish(_t(1))
    await trainer.step(await trainer.bus.read(64, 10))
    keys = RedisKeys(redis_namespace)
    dead = await client.xrange(keys.dead_letter)
    assert len(dead) == 1 and b"outside the catalogue" in dead[0][1][b"reason"]
    assert [t.event_id for t in trainer.buffer] == ["ev1"]
    assert (await client.xpending(keys.stream, "trainer"))["pending"] == 0


async def test_ft_scheme_fine_tunes_theta_with_alpha_zero(
        client: aioredis.Redis, tmp_path: Path, redis_namespace: str) -> None:
    trainer = _trainer(client, _settings(tmp_path, redis_namespace, scheme="ft"))
    await trainer.setup()
    for i in range(8):
        await trainer.bus.publish(_t(i))
    await _drain(trainer)
    latest = await trainer.policies.load(2)
    assert latest.scheme == "ft" and latest.alpha == 0.0 and latest.beta is None
    assert type(trainer.learner).__name__ == "FTLearner"


async def test_a_method_that_does_not_implement_the_scheme_is_refused(
        client: aioredis.Redis, tmp_path: Path, redis_namespace: str) -> None:
    """One A-iALP implementation: a plain A2C cannot stand in for scheme ap."""
    trainer = _trainer(client, _settings(tmp_path, redis_namespace, method="a2c"))
    with pytest.raises(ValueError, match="publishes scheme 'none', not 'ap'"):
        await trainer.setup()


async def test_live_trainer_and_in_process_learner_reach_the_same_parameters(
        client: aioredis.Redis, tmp_path: Path, redis_namespace: str) -> None:
    """The trainer process's ap learner is the experiments' ap learner: fed the same
    transitions in the same batches from the same θ and seed, both end with identical
    parameters (θ, β) and α."""
    import torch

    from policy.checkpoint import init_policy, save_checkpoint
    from policy.config import PolicyConfig
    from trainer.batch import TransitionBatch
    from trainer.learners import make_learner
    from trainer.learners.adaptive import APLearner

    theta = init_policy(PolicyConfig(num_items=N_ITEMS, max_len=8), seed=3)
    ckpt = save_checkpoint(theta, tmp_path / "theta")
    settings = _settings(tmp_path, redis_namespace, checkpoint=ckpt, alpha_steps=4)
    trainer = _trainer(client, settings)
    await trainer.setup()
    torch.manual_seed(11)  # dropout draws come from the global generator: same start
    events = [_t(i) for i in range(24)]
    for t in events:
        await trainer.bus.publish(t)
    await _drain(trainer)
    assert isinstance(trainer.learner, APLearner) and trainer.state.updates == 3

    reference = make_learner("ap", theta.config, seed=settings.seed, init=theta,
                             alpha_schedule=settings.alpha_schedule,
                             alpha_start=settings.alpha_start,
                             alpha_steps=settings.alpha_steps,
                             alpha_end=settings.alpha_end,
                             beta_init=settings.beta_init, **settings.learner_options)
    torch.manual_seed(11)
    for i in range(0, 24, settings.update_every):
        reference.update(TransitionBatch.from_transitions(events[i:i + 8], theta.config.max_len))
    live, ref = trainer.learner.snapshot(), reference.snapshot()
    assert live.alpha == ref.alpha == 0.75
    for net in ("theta", "beta"):
        a, b = getattr(live, net).state_dict(), getattr(ref, net).state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), net


async def test_alpha_anneals_from_zero_after_offline_pretraining(
        client: aioredis.Redis, tmp_path: Path, redis_namespace: str) -> None:
    """A pre-trained checkpoint counts its offline updates; α must still start at 0."""
    from policy.checkpoint import init_policy, save_checkpoint
    from policy.config import PolicyConfig

    theta = init_policy(PolicyConfig(num_items=N_ITEMS, max_len=8), seed=0)
    theta.version = 388
    theta.metadata["updates"] = 388  # what iALP pre-training records
    ckpt = save_checkpoint(theta, tmp_path / "pretrained")
    trainer = _trainer(client, _settings(tmp_path, redis_namespace, checkpoint=ckpt))
    await trainer.setup()
    reg = trainer.policies
    start = await reg.current_version()
    assert start is not None and (await reg.meta(start))["alpha"] == 0.0
    for i in range(16):
        await trainer.bus.publish(_t(i))
    await _drain(trainer)
    alphas = [(await reg.meta(v))["alpha"] for v in (start + 1, start + 2)]
    assert alphas == [0.25, 0.5]


async def test_ap_learner_follows_the_trainers_alpha_settings(
        client: aioredis.Redis, tmp_path: Path, redis_namespace: str) -> None:
    """``--method ap``: the learner anneals α itself, with the trainer's schedule."""
    trainer = _trainer(client, _settings(tmp_path, redis_namespace, method="ap",
                                         alpha_steps=4))
    await trainer.setup()
    reg = trainer.policies
    start = await reg.current_version()
    assert start is not None
    for i in range(16):
        await trainer.bus.publish(_t(i))
    await _drain(trainer)
    metas = [await reg.meta(v) for v in (start + 1, start + 2)]
    assert [m["alpha"] for m in metas] == [0.25, 0.5]
    latest = await reg.load(start + 2)
    assert latest.scheme == "ap" and latest.alpha == 0.5
    # The guardrail's step is the learner's step.
    trainer.state.alpha_step = 1
    trainer._sync_alpha_step()
    assert trainer.learner.alpha_step == 1  # type: ignore[attr-defined]


def test_demo_trainer_and_suite_use_one_learner_class_per_scheme(tmp_path: Path) -> None:
    """``ialp demo`` / compose start ``ialp trainer`` with a scheme and no method; the
    suite's A-iALP methods name a learner: both resolve to the same registered class."""
    from simulator_client.experiments.methods.ialp import IALP_METHODS
    from trainer.learners import learner_class

    for scheme, suite_method in (("ap", "ialp-ap"), ("ft", "ialp-ft")):
        trainer = TrainerService(
            _settings(tmp_path, "unused", scheme=scheme), InMemoryBus(),
            PublishedPolicies(None, RedisKeys("unused")))
        suite_learner = IALP_METHODS[suite_method][1]
        assert suite_learner is not None
        assert learner_class(trainer.method) is learner_class(suite_learner)


async def test_rehearsal_reuses_learned_transitions_without_counting_them_twice(
        client: aioredis.Redis, tmp_path: Path, redis_namespace: str) -> None:
    """``replay_updates``: more learner steps per batch, each event still learned once."""
    from trainer.audit import learned_counts

    audit = tmp_path / "audit.jsonl"
    trainer = _trainer(client, _settings(tmp_path, redis_namespace, replay_updates=2,
                                         replay_batch=8, audit_log=audit))
    await trainer.setup()
    steps_before = trainer.learner.steps
    for i in range(16):
        await trainer.bus.publish(_t(i))
    await _drain(trainer)
    assert trainer.state.updates == 2 and trainer.state.events_learned == 16
    assert trainer.learner.steps - steps_before == 2 * (1 + 2)  # each update + 2 rehearsals
    learned, _ = learned_counts(audit)
    assert sorted(learned) == sorted(f"ev{i}" for i in range(16))
    assert set(learned.values()) == {1}


async def test_ab_control_arm_feedback_is_consumed_not_learned(
        client: aioredis.Redis, tmp_path: Path, redis_namespace: str) -> None:
    import dataclasses

    import torch

    trainer = _trainer(client, _settings(tmp_path, redis_namespace))
    await trainer.setup()
    before = {k: v.clone() for k, v in trainer.learner.net.state_dict().items()}
    for i in range(8):
        src = "random" if i % 2 else "popular"
        await trainer.bus.publish(dataclasses.replace(_t(i), source=src))
    await _drain(trainer)
    after = trainer.learner.net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing learned
    assert trainer.state.events_learned == 8 and trainer.state.updates == 0
    assert trainer.metrics.registry.get_sample_value("ialp_trainer_events_control_total") == 8
    assert await trainer.bus.buffered() == []  # consumed exactly once
    for i in range(8, 16):
        await trainer.bus.publish(_t(i))
    await _drain(trainer)
    assert trainer.state.updates == 1 and trainer.state.events_learned == 16
    moved = trainer.learner.net.state_dict()
    assert any(not torch.equal(before[k], moved[k]) for k in before)
