"""``publish_interval_s``: updates within the interval are published together as one
version, the durable buffer is trimmed only with that publication (a crash before it
re-learns, never loses), a held-back publication goes out once the interval is over, a
clean stop publishes it, and a learner rebuilt after a rejected update or a rollback
learns the held-back events again."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import torch

from policy.checkpoint import policy_to_bytes
from policy.types import Transition
from trainer.online import TrainerService, TrainerSettings
from trainer.transport.bus import RedisStreamBus
from trainer.transport.keys import RedisKeys
from trainer.transport.publication import PublishedPolicies, nonfinite_parameters

N_ITEMS = 30


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_url)
    yield c
    await c.aclose()


def _trainer(client: aioredis.Redis, tmp_path: Path, ns: str, **kw: Any) -> TrainerService:
    settings = TrainerSettings(**{
        "redis_url": "unused", "namespace": ns, "state_dir": tmp_path / "state",
        "num_items": N_ITEMS, "max_len": 8, "update_every": 8, "flush_idle_s": 0,
        "keep_versions": 3, "consumer": "t1", "block_ms": 400, **kw})
    keys = RedisKeys(ns)
    return TrainerService(settings, RedisStreamBus(client, keys, consumer="t1"),
                          PublishedPolicies(client, keys, keep=3), stats_client=client)


def _t(i: int) -> Transition:
    return Transition(event_id=f"ev{i}", user_id=i % 5, history=(i % N_ITEMS, 3),
                      action=(i * 7) % N_ITEMS, reward=float(i % 2), done=False,
                      propensity=0.1, policy_version=1, source="theta")


async def test_updates_within_the_interval_become_one_version(
        client: aioredis.Redis, tmp_path: Path, redis_namespace: str) -> None:
    trainer = _trainer(client, tmp_path, redis_namespace, publish_interval_s=0.6)
    await trainer.setup()  # publishes version 1 (the starting point)
    reg = trainer.policies
    for i in range(32):
        await trainer.bus.publish(_t(i))
    await trainer.step(await trainer.bus.read(64, 10))
    # Four updates learned, none published yet: within 0.6 s of version 1.
    assert trainer.state.updates == 4 and await reg.current_version() == 1
    assert trainer.publish_wait() > 0
    assert await trainer.bus.buffered_count() == 32  # trimmed only with the publication

    # A crash now re-learns these 32 from the durable buffer: a new trainer on the same
    # state sees them all buffered again (its saved state is version 1's).
    again = _trainer(client, tmp_path, redis_namespace, publish_interval_s=0.6,
                     consumer="t1")
    await again.setup()
    assert len(again.buffer) == 32 and again.state.events_learned == 0

    await asyncio.sleep(0.65)
    await trainer.step([])  # the interval is over: one version for the four updates
    assert await reg.current_version() == 2
    meta = await reg.meta(2)
    assert meta["updates"] == 4 and meta["events_learned"] == 32
    assert await trainer.bus.buffered_count() == 0
    stats = await trainer.bus.stats()
    assert stats["events_learned"] == 32


async def test_run_publishes_a_held_back_version_without_waiting_a_full_read(
        client: aioredis.Redis, tmp_path: Path, redis_namespace: str) -> None:
    trainer = _trainer(client, tmp_path, redis_namespace, publish_interval_s=0.3,
                       block_ms=5000)
    await trainer.setup()
    for i in range(8):
        await trainer.bus.publish(_t(i))
    task = asyncio.create_task(trainer.run())
    reg = trainer.policies
    start = asyncio.get_running_loop().time()
    while await reg.current_version() != 2:
        assert asyncio.get_running_loop().time() - start < 2.0  # not the 5 s read
        await asyncio.sleep(0.02)
    for i in range(8, 16):  # learned within the interval of version 2
        await trainer.bus.publish(_t(i))
    while trainer.state.updates < 2:
        await asyncio.sleep(0.01)
    trainer.stop()  # a clean stop publishes what the interval held back
    await asyncio.wait_for(task, 10)
    assert await reg.current_version() == 3
    assert (await reg.meta(3))["events_learned"] == 16
    assert await trainer.bus.buffered_count() == 0


async def test_a_rejected_update_relearns_the_updates_held_back_before_it(
        client: aioredis.Redis, tmp_path: Path, redis_namespace: str) -> None:
    trainer = _trainer(client, tmp_path, redis_namespace, publish_interval_s=60)
    await trainer.setup()
    reg = trainer.policies
    for i in range(16):
        await trainer.bus.publish(_t(i))
    await trainer.step(await trainer.bus.read(64, 10))
    assert trainer.state.updates == 2 and await reg.current_version() == 1  # held back

    # The next update's weights come out non-finite (the loss was finite): it is
    # rejected and the learner rebuilt from version 1, which lacks the two held updates.
    learner = trainer.learner
    step = learner.optimizer.step

    def poisoned_step(*args: Any, **kwargs: Any) -> Any:
        out = step(*args, **kwargs)
        with torch.no_grad():
            next(learner.net.parameters()).fill_(math.inf)
        learner.optimizer.step = step  # once
        return out

    learner.optimizer.step = poisoned_step
    for i in range(16, 24):
        await trainer.bus.publish(_t(i))
    await trainer.step(await trainer.bus.read(64, 10))
    # The 8 of the poisoned update are dropped; the 16 held back are learned again by
    # the rebuilt learner, and counted once.
    assert trainer.learner is not learner
    assert trainer.state.updates == 2 and trainer.state.events_learned == 16
    assert trainer.buffer == []
    await trainer.flush(force=True)
    assert await reg.current_version() == 2
    meta = await reg.meta(2)
    assert meta["events_learned"] == 16 and meta["updates"] == 2
    first, second = await reg.load(1), await reg.load(2)
    assert nonfinite_parameters(second) == []
    # Version 2 holds what the rebuilt learner learned: β moved away from version 1.
    assert any(not torch.equal(a, b) for a, b in
               zip(first.beta.parameters(), second.beta.parameters(), strict=True))
    assert await trainer.bus.buffered_count() == 0  # the dropped 8 are consumed too


async def test_a_rollback_relearns_the_updates_held_back_before_it(
        client: aioredis.Redis, tmp_path: Path, redis_namespace: str) -> None:
    trainer = _trainer(client, tmp_path, redis_namespace, publish_interval_s=60)
    await trainer.setup()
    reg = trainer.policies
    for i in range(16):
        await trainer.bus.publish(_t(i))
    await trainer.step(await trainer.bus.read(64, 10))
    assert trainer.state.events_learned == 16 and await reg.current_version() == 1

    # Another version becomes current (an operator's rollback or promotion) while the
    # trainer holds two unpublished updates: they are learned again from that version.
    other = await reg.load(1)
    other.version = await reg.next_version()
    await reg.publish(other, policy_to_bytes(other), promote=True)
    await trainer.step([])
    assert trainer.state.events_learned == 16 and trainer.state.updates == 2
    assert trainer.buffer == []
    await trainer.flush(force=True)
    latest = await reg.current_version()
    assert latest == other.version + 1
    meta = await reg.meta(latest)
    assert meta["parent_version"] == other.version and meta["events_learned"] == 16
    assert await trainer.bus.buffered_count() == 0
