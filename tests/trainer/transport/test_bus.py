"""The feedback bus on a real Redis: enqueue-once, consumer-group recovery (own pending
first, XAUTOCLAIM), atomic commit, dead letters; and the in-memory twin."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from policy.types import Transition
from trainer.transport.bus import (
    RedisStreamBus,
    transition_from_json,
    transition_to_json,
)
from trainer.transport.keys import RedisKeys
from trainer.transport.memory_bus import InMemoryBus


def _t(i: int, **kw: object) -> Transition:
    base: dict[str, object] = dict(event_id=f"e{i}", user_id=i, history=(1, 2), action=3,
                                   reward=float(i), done=False, propensity=0.5,
                                   policy_version=1, source="theta")
    base.update(kw)
    return Transition(**base)  # type: ignore[arg-type]


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_url)
    yield c
    await c.aclose()


def _bus(client: aioredis.Redis, ns: str, consumer: str = "c1", **kw: object) -> RedisStreamBus:
    return RedisStreamBus(client, RedisKeys(ns), consumer=consumer, **kw)  # type: ignore[arg-type]


def test_transition_json_round_trip_and_errors() -> None:
    t = _t(7, history=(4, 5, 6), done=True)
    assert transition_from_json(transition_to_json(t)) == t
    with pytest.raises(ValueError, match="malformed"):
        transition_from_json(b'{"event_id": "x"}')
    with pytest.raises(ValueError):
        transition_to_json(_t(1, reward=float("nan")))


async def test_publish_is_once_per_event_id(client: aioredis.Redis,
                                            redis_namespace: str) -> None:
    bus = _bus(client, redis_namespace)
    first = await bus.publish(_t(1))
    assert first is not None
    assert await bus.publish(_t(1, reward=9.0)) is None
    assert await bus.publish(_t(2)) is not None
    keys = RedisKeys(redis_namespace)
    assert await client.xlen(keys.stream) == 2
    assert (await bus.stats())["enqueued"] == 2


async def test_commit_buffers_acks_and_never_learns_twice(client: aioredis.Redis,
                                                          redis_namespace: str) -> None:
    bus = _bus(client, redis_namespace)
    keys = RedisKeys(redis_namespace)
    for i in range(3):
        await bus.publish(_t(i))
    # The same event id sneaking in twice (e.g. after its marker expired).
    await client.xadd(keys.stream, {"t": transition_to_json(_t(1))})
    got = await bus.read(10, 10)
    assert [d.event.event_id for d in got] == ["e0", "e1", "e2", "e1"]
    new = await bus.commit(got)
    assert [t.event_id for t in new] == ["e0", "e1", "e2"]
    assert [t.event_id for t in await bus.buffered()] == ["e0", "e1", "e2"]
    pending = await client.xpending(keys.stream, "trainer")
    assert pending["pending"] == 0
    stats = await bus.stats()
    assert stats["events_buffered"] == 3 and stats["duplicates"] == 1
    await bus.consume_buffer(["e0", "e1"], learned_total=2)
    assert [t.event_id for t in await bus.buffered()] == ["e2"]
    # A retry (its first reply lost) removes nothing more: trimming is by id.
    await bus.consume_buffer(["e0", "e1"], learned_total=2)
    assert [t.event_id for t in await bus.buffered()] == ["e2"]
    assert await bus.buffered_count() == 1
    assert (await bus.stats())["events_learned"] == 2


async def test_restart_reads_own_pending_first_then_claims_dead_consumers(
        client: aioredis.Redis, redis_namespace: str) -> None:
    first = _bus(client, redis_namespace, consumer="a")
    for i in range(4):
        await first.publish(_t(i))
    taken = await first.read(2, 10)  # read, then "crash" before committing
    assert [d.event.event_id for d in taken] == ["e0", "e1"]
    other = _bus(client, redis_namespace, consumer="b", claim_idle_ms=60_000)
    assert [d.event.event_id for d in await other.read(10, 10)] == ["e2", "e3"]

    restarted = _bus(client, redis_namespace, consumer="a")
    again = await restarted.read(10, 10)
    assert [d.event.event_id for d in again] == ["e0", "e1"]
    assert all(d.deliveries >= 2 for d in again)
    await restarted.commit(again)

    # Consumer b died holding e2, e3: after they idle, a claims them.
    claimer = _bus(client, redis_namespace, consumer="a", claim_idle_ms=1, claim_every_s=0)
    claimer._own_pending_cursor = None
    import asyncio

    await asyncio.sleep(0.01)
    claimed = await claimer.read(10, 10)
    assert [d.event.event_id for d in claimed] == ["e2", "e3"]
    await claimer.commit(claimed)
    assert len(await claimer.buffered()) == 4


async def test_poison_entries_are_dead_lettered_after_max_deliveries(
        client: aioredis.Redis, redis_namespace: str) -> None:
    import asyncio

    keys = RedisKeys(redis_namespace)
    bus = _bus(client, redis_namespace, claim_idle_ms=1, claim_every_s=0, max_deliveries=3)
    await bus.ensure_group()
    await client.xadd(keys.stream, {"t": b"not json"})
    await bus.publish(_t(5))
    good = await bus.read(10, 10)
    assert [d.event.event_id for d in good] == ["e5"]
    await bus.commit(good)
    for _ in range(4):
        await asyncio.sleep(0.01)
        assert await bus.read(10, 10) == []
    dead = await client.xrange(keys.dead_letter)
    assert len(dead) == 1 and dead[0][1][b"t"] == b"not json"
    assert (await client.xpending(keys.stream, "trainer"))["pending"] == 0
    assert (await bus.stats())["dead_lettered"] == 1


async def test_in_memory_bus_has_the_same_semantics() -> None:
    bus = InMemoryBus(max_deliveries=2)
    assert await bus.publish(_t(1)) is not None
    assert await bus.publish(_t(1)) is None
    await bus.publish(_t(2))
    got = await bus.read(10, 10)
    await bus.commit(got[:1])
    await bus.redeliver_pending()
    again = await bus.read(10, 10)
    assert [d.event.event_id for d in again] == ["e2"] and again[0].deliveries == 2
    await bus.redeliver_pending()
    assert await bus.read(10, 10) == []  # third delivery: parked
    assert len(bus.dead) == 1
    assert [t.event_id for t in await bus.buffered()] == ["e1"]
    assert (await bus.stats())["enqueued"] == 2
