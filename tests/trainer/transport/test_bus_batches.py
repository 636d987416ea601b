"""Batches on the feedback bus, on a real Redis: ``publish_many`` enqueues once per event
id (also within one batch) and keeps the counters and the awaiting set as ``publish``
does, on one stream and over shards; ``unread_age_s`` tells how long the oldest unread
entry has waited, on every bus."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from policy.types import Transition
from trainer.transport.bus import RedisStreamBus, transition_from_json
from trainer.transport.keys import RedisKeys
from trainer.transport.memory_bus import InMemoryBus
from trainer.transport.sharded_bus import ShardedStreamBus
from trainer.transport.shards import Shards


def _t(event_id: str) -> Transition:
    return Transition(event_id=event_id, user_id=1, history=(1, 2), action=3, reward=1.0,
                      done=False, propensity=0.5, policy_version=1, source="theta")


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_url)
    yield c
    await c.aclose()


async def test_publish_many_enqueues_each_event_id_once(
        client: aioredis.Redis, redis_namespace: str) -> None:
    keys = RedisKeys(redis_namespace)
    bus = RedisStreamBus(client, keys)
    await client.zadd(keys.awaiting_feedback, {"a": 1.0, "b": 1.0, "z": 1.0})
    assert await bus.publish(_t("b")) is not None  # already had feedback
    ids = await bus.publish_many([_t("a"), _t("b"), _t("c"), _t("a")])
    assert ids[1] is None and ids[3] is None  # earlier call, and earlier in this batch
    assert ids[0] is not None and ids[2] is not None
    entries = await client.xrange(keys.stream)
    assert [e[0].decode() for e in entries][1:] == [ids[0], ids[2]]
    assert [transition_from_json(f[b"t"]).event_id for _, f in entries] == ["b", "a", "c"]
    assert int(await client.get(keys.enqueued_total)) == 3
    # The default-reward deadline of every enqueued event is cleared, the rest kept.
    assert await client.zrange(keys.awaiting_feedback, 0, -1) == [b"z"]
    assert await bus.publish_many([]) == []
    assert await bus.publish_many([_t("a"), _t("c")]) == [None, None]
    assert int(await client.get(keys.enqueued_total)) == 3


async def test_sharded_publish_many_answers_in_order_from_each_shard(
        client: aioredis.Redis, redis_namespace: str) -> None:
    shards = Shards(redis_namespace, 4)
    bus = ShardedStreamBus(client, shards)
    events = [_t(shards.new_event_id(u)) for u in range(16)]
    ids = await bus.publish_many([*events, events[0]])
    assert ids[-1] is None and all(i is not None for i in ids[:-1])
    for e, entry in zip(events, ids[:-1], strict=True):
        k = shards.shard_keys(shards.of_event(e.event_id))
        got = await client.xrange(k.stream, min=entry, max=entry)
        assert transition_from_json(got[0][1][b"t"]).event_id == e.event_id
    assert (await bus.stats())["enqueued"] == 16


async def test_unread_age_grows_until_the_group_reads(
        client: aioredis.Redis, redis_namespace: str) -> None:
    bus = RedisStreamBus(client, RedisKeys(redis_namespace))
    assert await bus.unread_age_s() is None  # no stream, no group
    await bus.ensure_group()
    assert await bus.unread_age_s() == 0.0
    await bus.publish_many([_t("a"), _t("b")])
    await asyncio.sleep(0.3)
    age = await bus.unread_age_s()
    assert age is not None and 0.25 <= age < 5
    await bus.read(1, 0)  # "a" read: "b" is the oldest unread, same age
    assert (await bus.unread_age_s() or 0) >= 0.25
    await bus.read(10, 0)
    assert await bus.unread_age_s() == 0.0

    shards = Shards(redis_namespace + "-sh", 4)
    sharded = ShardedStreamBus(client, shards)
    await sharded.ensure_group()
    assert await sharded.unread_age_s() == 0.0
    await sharded.publish_many([_t(shards.new_event_id(u)) for u in range(8)])
    await asyncio.sleep(0.2)
    assert (await sharded.unread_age_s() or 0) >= 0.15

    memory = InMemoryBus()
    assert await memory.unread_age_s() == 0.0
    await memory.publish_many([_t("a")])
    t0 = time.time()
    await asyncio.sleep(0.1)
    assert (await memory.unread_age_s() or 0) >= time.time() - t0 - 0.01
    await memory.read(5, 0)
    assert await memory.unread_age_s() == 0.0
