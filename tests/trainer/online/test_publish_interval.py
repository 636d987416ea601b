"""``publish_interval_s``: updates within the interval are published together as one
version, the durable buffer is trimmed only with that publication (a crash before it
re-learns, never loses), a held-back publication goes out once the interval is over, and
a clean stop publishes it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from policy.types import Transition
from trainer.online import TrainerService, TrainerSettings
from trainer.transport.bus import RedisStreamBus
from trainer.transport.keys import RedisKeys
from trainer.transport.publication import PublishedPolicies

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
