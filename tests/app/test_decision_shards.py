"""Decisions of a sharded deployment on a real Redis: each in its event's shard, the
cap split over the shards, the default-reward sweep over every shard."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.decision_shards import ShardedDecisionStore
from app.decisions import Decision
from trainer.transport.client import redis_client
from trainer.transport.shards import Shards


@pytest.fixture
async def aclient(redis_url: str) -> AsyncIterator[Any]:
    c = redis_client(redis_url)
    yield c
    await c.aclose()


def _decision(shards: Shards, user: int) -> Decision:
    return Decision(shards.new_event_id(user), user, (1, 2), (3, 4), (0.5, 0.5),
                    ("theta", "beta"), 1, time.time())


async def test_decisions_live_in_their_shard_and_the_cap_is_split(
        aclient: Any, redis_namespace: str) -> None:
    shards = Shards(redis_namespace, 4)
    store = ShardedDecisionStore(aclient, shards, ttl_s=60, cap=8)  # 2 per shard
    first = [_decision(shards, u) for u in range(8)]
    evicted = 0
    for d in first:
        evicted += await store.save_many([d])
        got = await store.get(d.event_id)
        assert got is not None and got.user_id == d.user_id
        home = shards.shard_keys(shards.of_event(d.event_id))
        assert await aclient.exists(home.decision(d.event_id)) == 1
    later = [_decision(shards, u) for u in range(40)]
    evicted += await store.save_many(later)
    assert evicted == 48 - 8  # every eviction counted once, 2 kept per shard
    kept = [await aclient.zcard(f"{k.namespace}:decisions") for k in shards.all_shard_keys()]
    assert kept == [2, 2, 2, 2]
    assert await store.get(first[0].event_id) is None  # the oldest went first


async def test_the_default_reward_sweep_reads_every_shard(
        aclient: Any, redis_namespace: str) -> None:
    shards = Shards(redis_namespace, 4)
    store = ShardedDecisionStore(aclient, shards, ttl_s=60, default_reward_after_s=0.0)
    batch = [_decision(shards, u) for u in range(20)]
    await store.save_many(batch)
    assert len({shards.of_event(d.event_id) for d in batch}) == 4
    popped = await store.pop_expired()
    assert sorted(popped) == sorted(d.event_id for d in batch)
    assert await store.pop_expired() == []  # each id handed out once
