"""The feedback bus over N shard streams: :class:`ShardedStreamBus` and :func:`make_bus`.

Each shard is a :class:`~trainer.transport.bus.RedisStreamBus` on the shard's tagged keys
(:mod:`.shards`), so every exactly-once step keeps its single-slot script: publish (dedup
marker + stream + counter + awaiting set), commit (learned markers + durable buffer +
acknowledgement), trim, dead-lettering. This class routes and merges:

* **Producer:** an event goes to the shard of its event id.
* **Consumer:** one consumer group per shard stream (same group and consumer name). A read
  sweeps every shard without waiting; only when all are empty does it wait, on one shard
  at a time in turn, ``block_ms / N`` each, so an idle trainer neither spins nor lets a
  new entry wait longer than one slice. Delivery ids are ``<shard>/<entry id>`` (entry ids
  of different streams can be equal), so acknowledgements and dead letters reach the
  right stream.
* **Commit:** one Lua call per shard commits that shard's whole batch (cluster pipelines
  refuse ``EVALSHA``, and one call is also cheaper than one per entry).
* **Buffer and counters:** the durable buffer is per shard (read back interleaved, shard
  by shard); ``events_learned`` is written to the deployment-wide trainer counters, the
  per-shard counters (enqueued, buffered, duplicates, dead letters) are summed.

Calls to several shards run concurrently; when one fails, the others are awaited to the
end before the error is raised, so no read result is half-applied (the trainer then
resynchronises and re-reads its pending entries, as after any Redis error).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from policy.types import Transition
from trainer.transport.bus import (
    Delivery,
    RedisStreamBus,
    _s,
    transition_to_json,
)
from trainer.transport.shards import Shards

T = TypeVar("T")

_COMMIT_MANY = """
-- KEYS: buffer, stream, stats, buffer data, then the learned marker of each entry
-- ARGV: group, dedup ttl, then entry id, payload, event id of each entry
local out = {}
for i = 1, #KEYS - 4 do
  local entry, payload, event = ARGV[3 * i], ARGV[3 * i + 1], ARGV[3 * i + 2]
  if redis.call('SET', KEYS[4 + i], '1', 'NX', 'EX', ARGV[2]) then
    local seq = redis.call('HINCRBY', KEYS[3], 'buffer_seq', 1)
    redis.call('ZADD', KEYS[1], seq, event)
    redis.call('HSET', KEYS[4], event, payload)
    redis.call('HINCRBY', KEYS[3], 'events_buffered', 1)
    out[i] = 1
  else
    redis.call('HINCRBY', KEYS[3], 'duplicates', 1)
    out[i] = 0
  end
  redis.call('XACK', KEYS[2], ARGV[1], entry)
end
return out
"""
"""The per-entry commit of :mod:`.bus` for a whole batch of one shard, in one step."""


async def _all(calls: Sequence[Awaitable[T]]) -> list[T]:
    """Run ``calls`` concurrently; every one finishes before the first error is raised."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return list(results)  # type: ignore[arg-type]


def _split(delivery_id: str) -> tuple[int, str]:
    shard, sep, entry = delivery_id.partition("/")
    if not sep or not shard.isdigit():
        raise ValueError(f"not a sharded delivery id: {delivery_id!r}")
    return int(shard), entry


class ShardedStreamBus:
    """A :class:`~trainer.transport.bus.FeedbackBus` over every shard of :class:`Shards`
    (it also has :meth:`ensure_group`, as :class:`RedisStreamBus`)."""

    def __init__(self, client: Any, shards: Shards, **bus_options: Any) -> None:
        """``client``: ``redis.asyncio.Redis`` or ``RedisCluster``; ``bus_options``: the
        consumer settings of :class:`RedisStreamBus` (group, consumer, dedup TTL, claim
        and dead-letter limits), shared by every shard."""
        self.client = client
        self.shards = shards
        self.keys = shards.keys
        self.buses = [RedisStreamBus(client, k, **bus_options) for k in shards.all_shard_keys()]
        self._commit_many = client.register_script(_COMMIT_MANY)
        self._wait_on = 0  # the shard the next idle wait blocks on

    def _by_shard(self, delivery_ids: Sequence[str]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for d in delivery_ids:
            s, entry = _split(d)
            out.setdefault(s, []).append(entry)
        return out

    def _events_by_shard(self, event_ids: Sequence[str]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for e in event_ids:
            out.setdefault(self.shards.of_event(e), []).append(e)
        return out

    # producer side -------------------------------------------------------------------
    async def publish(self, event: Transition) -> str | None:
        """Enqueue once per event id on the event's shard: its entry id, or ``None``."""
        return await self.buses[self.shards.of_event(event.event_id)].publish(event)

    async def publish_many(self, events: Sequence[Transition]) -> list[str | None]:
        """Enqueue a batch, one Lua call per shard it touches (concurrently); answers in
        the batch's order (entry ids of their shard's stream, as :meth:`publish`). When
        one shard fails the error is raised after the others finished: their events are
        enqueued, and a retry of the batch finds them duplicates."""
        groups: dict[int, list[int]] = {}
        for i, e in enumerate(events):
            groups.setdefault(self.shards.of_event(e.event_id), []).append(i)
        shards = list(groups)
        parts = await _all([self.buses[s].publish_many([events[i] for i in groups[s]])
                            for s in shards])
        out: list[str | None] = [None] * len(events)
        for s, ids in zip(shards, parts, strict=True):
            for i, entry in zip(groups[s], ids, strict=True):
                out[i] = entry
        return out

    # consumer side -------------------------------------------------------------------
    async def ensure_group(self) -> None:
        """Create the consumer group on every shard stream."""
        await _all([b.ensure_group() for b in self.buses])

    @staticmethod
    def _label(shard: int, deliveries: list[Delivery]) -> list[Delivery]:
        return [replace(d, entry_id=f"{shard}/{d.entry_id}") for d in deliveries]

    async def read(self, count: int, block_ms: int) -> list[Delivery]:
        """Up to ``count`` deliveries from each shard; waits (``block_ms`` split over the
        shards, one after the other) only when every shard is empty."""
        got = await _all([b.read(count, 0) for b in self.buses])
        out = [d for s, ds in enumerate(got) for d in self._label(s, ds)]
        if out or block_ms <= 0:
            return out
        s = self._wait_on
        self._wait_on = (s + 1) % len(self.buses)
        wait = max(1, block_ms // len(self.buses))
        return self._label(s, await self.buses[s].read(count, wait))

    async def ack(self, ids: Sequence[str]) -> None:
        """XACK each delivery on its shard."""
        await _all([self.buses[s].ack(e) for s, e in self._by_shard(ids).items()])

    async def _commit_shard(self, shard: int, deliveries: list[Delivery]) -> list[bool]:
        bus = self.buses[shard]
        k = bus.keys
        args: list[Any] = [bus.group, bus.dedup_ttl_s]
        for d in deliveries:
            args += [_split(d.entry_id)[1], transition_to_json(d.event), d.event.event_id]
        res = await self._commit_many(
            keys=[k.trainer_buffer, k.stream, k.trainer_stats, k.trainer_buffer_data,
                  *[k.learned(d.event.event_id) for d in deliveries]],
            args=args)
        return [int(r) == 1 for r in res]

    async def commit(self, deliveries: Sequence[Delivery]) -> list[Transition]:
        """Per shard, one atomic step: learned markers, buffer, acknowledgements."""
        groups: dict[int, list[Delivery]] = {}
        for d in deliveries:
            groups.setdefault(_split(d.entry_id)[0], []).append(d)
        shards = list(groups)
        flags = await _all([self._commit_shard(s, groups[s]) for s in shards])
        return [d.event for s, fs in zip(shards, flags, strict=True)
                for d, new in zip(groups[s], fs, strict=True) if new]

    async def buffered(self) -> list[Transition]:
        """Every shard's durable buffer, interleaved (commit order within a shard)."""
        parts = await _all([b.buffered() for b in self.buses])
        out: list[Transition] = []
        for i in range(max((len(p) for p in parts), default=0)):
            out.extend(p[i] for p in parts if i < len(p))
        return out

    async def buffered_count(self) -> int:
        """Transitions in all durable buffers."""
        return sum(await _all([b.buffered_count() for b in self.buses]))

    def restart_reading(self) -> None:
        """Re-read the own pending entries of every shard from the start."""
        for b in self.buses:
            b.restart_reading()

    async def consume_buffer(
        self, event_ids: Sequence[str], *, learned_total: int | None = None
    ) -> None:
        """Trim each shard's buffer by id, then set the learned counter. Both steps are
        idempotent, so a crash between them is repaired by the next start (the saved
        state names the ids and the total)."""
        groups = self._events_by_shard(event_ids)
        await _all([self.buses[s].consume_buffer(ids) for s, ids in groups.items()])
        if learned_total is not None:
            await self.client.hset(self.keys.trainer_stats, "events_learned",
                                   str(int(learned_total)))

    async def dead_letter(self, deliveries: Sequence[tuple[str, str, str]]) -> None:
        """Park entries in their shard's dead-letter stream and acknowledge them."""
        groups: dict[int, list[tuple[str, str, str]]] = {}
        for delivery_id, raw, reason in deliveries:
            s, entry = _split(delivery_id)
            groups.setdefault(s, []).append((entry, raw, reason))
        await _all([self.buses[s].dead_letter(items) for s, items in groups.items()])

    async def quarantine(self, items: Sequence[tuple[str, str, str]]) -> None:
        """Park committed transitions in the dead-letter stream of their event's shard."""
        groups: dict[int, list[tuple[str, str, str]]] = {}
        for item in items:
            groups.setdefault(self.shards.of_event(item[0]), []).append(item)
        await _all([self.buses[s].quarantine(g) for s, g in groups.items()])

    async def unread_age_s(self) -> float | None:
        """The largest unread age over the shards (``None`` when no shard has a group)."""
        ages = [a for a in await _all([b.unread_age_s() for b in self.buses])
                if a is not None]
        return max(ages) if ages else None

    async def stats(self) -> dict[str, int]:
        """Per-shard counters summed, plus the deployment-wide trainer counters."""
        parts = await _all([b.stats() for b in self.buses])
        out: dict[str, int] = {}
        for p in parts:
            for name, v in p.items():
                out[name] = out.get(name, 0) + v
        glob = await self.client.hgetall(self.keys.trainer_stats)
        out.update({_s(k): int(v) for k, v in glob.items()})
        return out


def make_bus(client: Any, shards: Shards,
             **bus_options: Any) -> RedisStreamBus | ShardedStreamBus:
    """The deployment's bus: today's single stream when the layout is untagged (one shard
    on a plain Redis), else :class:`ShardedStreamBus`."""
    if not shards.tagged:
        return RedisStreamBus(client, shards.keys, **bus_options)
    return ShardedStreamBus(client, shards, **bus_options)
