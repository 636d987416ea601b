"""Sharded feedback streams on a real Redis (N = 4) and on a real 3-node Redis Cluster.

The layout: event ids land in their user's shard, every key a script touches shares
one slot. The bus: routing, commits, dead letters and counters per shard. End to end:
the real ``ialp serve`` (uvicorn) and ``ialp trainer`` processes, the trainer SIGKILLed
mid-stream and restarted; every accepted event is learned exactly once (learned counter,
per-event markers and the trainer's learning audit), spread over every shard.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.crc import key_slot

from policy.types import Transition
from simulator_client.chaos.processes import Procs, Traffic, one_event
from trainer.audit import learned_counts
from trainer.transport.client import redis_client, sync_redis_client
from trainer.transport.keys import RedisKeys
from trainer.transport.redis_cluster import EmbeddedRedisCluster
from trainer.transport.redis_server import EmbeddedRedis, free_port
from trainer.transport.sharded_bus import ShardedStreamBus, make_bus
from trainer.transport.shards import Shards


def _t(event_id: str, user: int = 1) -> Transition:
    return Transition(event_id=event_id, user_id=user, history=(1, 2), action=3, reward=1.0,
                      done=False, propensity=0.5, policy_version=1, source="theta")


def _slot(key: str) -> int:
    return int(key_slot(key.encode()))


# -- layout --------------------------------------------------------------------------------
def test_one_shard_on_plain_redis_keeps_the_single_stream_layout() -> None:
    shards = Shards("ialp")
    assert not shards.tagged
    assert shards.keys == RedisKeys("ialp") == shards.shard_keys(0)
    assert shards.keys.stream == "ialp:feedback"
    assert len(shards.new_event_id(5)) == 32


def test_event_ids_land_in_their_users_shard_and_users_spread() -> None:
    shards = Shards("ialp", 4)
    users = range(400)
    for u in users:
        eid = shards.new_event_id(u)
        assert len(eid) == 32 and int(eid, 16) >= 0
        assert shards.of_event(eid) == shards.of_user(u)
    per_shard = Counter(shards.of_user(u) for u in users)
    assert set(per_shard) == {0, 1, 2, 3} and min(per_shard.values()) > 60


@pytest.mark.parametrize("shards", [Shards("ialp", 4), Shards("ialp", 1, cluster=True)])
def test_every_script_touches_one_slot(shards: Shards) -> None:
    assert shards.tagged
    for s in range(shards.count):
        k = shards.shard_keys(s)
        eid = shards.new_event_id(s)
        # publish, commit, trim, dead-letter, decisions (save, pop), in one slot per shard
        family = [k.feedback_seen(eid), k.stream, k.enqueued_total, k.awaiting_feedback,
                  k.learned(eid), k.trainer_buffer, k.trainer_buffer_data, k.trainer_stats,
                  k.dead_letter, k.decision(eid), f"{k.namespace}:decisions"]
        assert len({_slot(x) for x in family}) == 1, family
    g = shards.keys  # policy publication's transactions
    family = [g.policy_blob(3), g.policy_meta(3), g.policy_versions, g.policy_current,
              g.policy_candidate, g.policy_seq, g.trainer_stats, g.ab_stats, g.ab_popularity]
    assert len({_slot(x) for x in family}) == 1
    if shards.count > 1:  # the shards spread over slots (and so over cluster nodes)
        assert len({_slot(shards.shard_keys(s).stream) for s in range(shards.count)}) > 1


# -- the bus on one Redis ------------------------------------------------------------------
@pytest.fixture
async def aclient(redis_url: str) -> AsyncIterator[Any]:
    c = redis_client(redis_url)
    yield c
    await c.aclose()


async def test_sharded_bus_routes_commits_and_counts_per_shard(
        aclient: Any, redis_namespace: str) -> None:
    shards = Shards(redis_namespace, 4)
    bus = make_bus(aclient, shards, consumer="c1")
    assert isinstance(bus, ShardedStreamBus)
    await bus.ensure_group()
    ids = [shards.new_event_id(u) for u in range(40)]
    for i, e in enumerate(ids):
        assert await bus.publish(_t(e, user=i)) is not None
    assert await bus.publish(_t(ids[0])) is None  # once per event id
    lengths = [await aclient.xlen(k.stream) for k in shards.all_shard_keys()]
    assert sum(lengths) == 40 and min(lengths) > 0
    got = await bus.read(100, 50)
    assert sorted(d.event.event_id for d in got) == sorted(ids)
    assert all(int(d.entry_id.split("/")[0]) == shards.of_event(d.event.event_id) for d in got)
    # One poisoned delivery is dead-lettered in its own shard; the rest committed.
    bad, good = got[0], got[1:]
    await bus.dead_letter([(bad.entry_id, "{}", "test")])
    new = await bus.commit(good)
    assert len(new) == 39
    assert await bus.commit(good) == []  # a redelivery is acknowledged, never learned
    assert await bus.buffered_count() == 39
    assert {t.event_id for t in await bus.buffered()} == {d.event.event_id for d in good}
    for k in shards.all_shard_keys():
        assert (await aclient.xpending(k.stream, "trainer"))["pending"] == 0
    dead_shard = shards.shard_keys(shards.of_event(bad.event.event_id))
    assert await aclient.xlen(dead_shard.dead_letter) == 1
    await bus.consume_buffer([t.event_id for t in new[:10]], learned_total=10)
    assert await bus.buffered_count() == 29
    stats = await bus.stats()
    assert stats["enqueued"] == 40 and stats["events_buffered"] == 39
    assert stats["duplicates"] == 39 and stats["dead_lettered"] == 1
    assert stats["events_learned"] == 10
    assert await bus.read(10, 20) == []  # idle: waits one slice, returns nothing


# -- end to end: real API and trainer processes, trainer SIGKILLed ------------------------
def _counts(r: Any, shards: Shards, accepted: list[str]) -> dict[str, Any]:
    glob = {(k.decode() if isinstance(k, bytes) else k): int(v)
            for k, v in r.hgetall(shards.keys.trainer_stats).items()}
    markers = sum(int(r.exists(shards.shard_keys(shards.of_event(e)).learned(e)))
                  for e in accepted)
    per: list[dict[str, int]] = []
    for k in shards.all_shard_keys():
        stats = {(a.decode() if isinstance(a, bytes) else a): int(v)
                 for a, v in r.hgetall(k.trainer_stats).items()}
        exists = bool(r.exists(k.stream))
        per.append({"stream": int(r.xlen(k.stream)) if exists else 0,
                    "pending": int(r.xpending(k.stream, "trainer")["pending"]) if exists else 0,
                    "buffer": int(r.zcard(k.trainer_buffer)),
                    "duplicates": stats.get("duplicates", 0),
                    "dead": stats.get("dead_lettered", 0)})
    return {"events_learned": glob.get("events_learned", 0), "markers": markers,
            "streams": [p["stream"] for p in per],
            "pending": sum(p["pending"] for p in per), "buffer": sum(p["buffer"] for p in per),
            "duplicates": sum(p["duplicates"] for p in per),
            "dead": sum(p["dead"] for p in per)}


def _kill_restart_run(tmp: Path, url: str, shards_n: int, *, events: int = 120,
                      kill_at: int = 50, down_events: int = 30) -> None:
    cluster = url.startswith("redis+cluster://")
    r = sync_redis_client(url)
    ps = Procs(tmp, url)
    shards = Shards(ps.ns, shards_n, cluster=cluster)
    audit = tmp / "audit.jsonl"
    env = {"IALP_STREAM_SHARDS": shards_n, "IALP_AUDIT_LOG": audit}
    traffic = Traffic()
    in_flight = -1
    try:
        with httpx.Client(timeout=30) as http:
            ps.trainer(IALP_CLAIM_IDLE_MS=1000, IALP_CLAIM_EVERY_S=0.5, **env)
            api = ps.api("api", free_port(), **env)
            ps.wait(lambda: r.exists(shards.keys.policy_current) == 1, "first version")
            for i in range(events):
                if i == kill_at:
                    ps.wait(lambda: _counts(r, shards, [])["events_learned"] > 0,
                            "some learning before the kill")
                if i == kill_at + 5:
                    # Five events sent right before the kill: accepted, not yet learned
                    # (unread, pending or buffered), whatever the trainer's timing.
                    ps.kill("trainer")
                    in_flight = len(traffic.accepted) - \
                        _counts(r, shards, [])["events_learned"]
                if i == kill_at + down_events:
                    ps.trainer(IALP_CLAIM_IDLE_MS=1000, IALP_CLAIM_EVERY_S=0.5, **env)
                one_event(http, api, traffic, user=i % 37)

            def drained() -> bool:
                c = _counts(r, shards, [])
                return c["events_learned"] >= events and c["buffer"] == 0 \
                    and c["pending"] == 0
            ps.wait(drained, f"{events} events learned", timeout=90)
            time.sleep(0.5)  # anything learned twice would show up now
        n = len(traffic.accepted)
        c = _counts(r, shards, traffic.accepted)
        learned, rejected = learned_counts(audit)
    finally:
        ps.stop()
        r.close()
    assert n == events and traffic.errors == [] and traffic.duplicates == 0
    assert in_flight > 0  # the kill left accepted events not yet learned
    # Exactly once, three ways: the learned counter (sum of published batch sizes), one
    # learned marker per accepted event, and the audit of the state the trainer resumes.
    assert c["events_learned"] == n, c
    assert c["markers"] == n, c
    assert set(learned) == set(traffic.accepted) and max(learned.values()) == 1
    assert not rejected
    assert c["buffer"] == 0 and c["pending"] == 0 and c["dead"] == 0, c
    # Every shard carried feedback, and the streams hold exactly the accepted events.
    assert sum(c["streams"]) == n and min(c["streams"]) > 0, c
    # Each user's events stayed in the user's shard (one client, so accepted in order).
    assert [shards.of_event(e) for e in traffic.accepted] == \
        [shards.of_user(i % 37) for i in range(events)]


def test_four_shards_on_one_redis_survive_a_trainer_kill(
        redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    _kill_restart_run(tmp_path, redis_server.url, 4)


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedisCluster]:
    """Three redis-server nodes in cluster mode, slots assigned by the helper."""
    cluster = EmbeddedRedisCluster(Path(tmp_path_factory.mktemp("cluster")), nodes=3).start()
    yield cluster
    cluster.stop()


def test_cluster_has_three_nodes_sharing_the_slots(redis_cluster: EmbeddedRedisCluster) -> None:
    r = sync_redis_client(redis_cluster.url)
    try:
        assert len(r.get_primaries()) == 3
        shards = Shards("layout", 4, cluster=True)
        nodes = {r.get_node_from_key(k.stream).name for k in shards.all_shard_keys()}
        assert len(nodes) >= 2  # four shards do not all sit on one node
    finally:
        r.close()


def test_four_shards_on_a_three_node_cluster_survive_a_trainer_kill(
        redis_cluster: EmbeddedRedisCluster, tmp_path: Path) -> None:
    _kill_restart_run(tmp_path, redis_cluster.url, 4)
