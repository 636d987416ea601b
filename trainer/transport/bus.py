"""The feedback bus: transitions travel from the API to the trainer through it.

Two implementations of one protocol:

* :class:`RedisStreamBus` — a Redis stream read through a consumer group. The API side
  enqueues each event id at most once (an atomic Lua script sets a de-duplication marker
  and appends to the stream together). The trainer side reads its own pending entries
  first after a restart, claims entries left idle by dead consumers (``XAUTOCLAIM``),
  parks entries delivered too often in a dead-letter stream, and *commits* a delivery by
  marking the event learned, appending it to a durable buffer and acknowledging it in
  one atomic step — so a crash can neither lose nor double an event.
* :class:`~trainer.transport.memory_bus.InMemoryBus` — the same semantics in one process,
  for tests and the in-process driver.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

from policy.types import Transition
from trainer.transport.keys import RedisKeys

logger = logging.getLogger(__name__)


def transition_to_json(t: Transition) -> str:
    """Compact JSON of one transition (the stream entry payload)."""
    # Fields read directly: dataclasses.asdict deep-copies and cost ~15 times the dump,
    # on the path of every feedback event and every trainer commit.
    d = {name: getattr(t, name) for name in _FIELDS}
    d["history"] = list(t.history)
    return json.dumps(d, separators=(",", ":"), allow_nan=False)


_FIELDS = tuple(f.name for f in fields(Transition))


def transition_from_json(payload: str | bytes) -> Transition:
    """Inverse of :func:`transition_to_json`; raises ``ValueError`` on malformed input."""
    try:
        d = json.loads(payload)
        return Transition(
            event_id=str(d["event_id"]),
            user_id=int(d["user_id"]),
            history=tuple(int(x) for x in d["history"]),
            action=int(d["action"]),
            reward=float(d["reward"]),
            done=bool(d["done"]),
            propensity=float(d.get("propensity", 1.0)),
            policy_version=int(d.get("policy_version", 0)),
            source=str(d.get("source", "")),
        )
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"malformed transition payload: {exc}") from exc


@dataclass(frozen=True)
class Delivery:
    """One stream entry handed to the trainer."""

    entry_id: str
    """Stream entry id (what gets acknowledged)."""
    event: Transition
    """The decoded transition."""
    deliveries: int = 1
    """How many times the entry has been delivered (1 on first delivery)."""


class FeedbackBus(Protocol):
    """Transport of feedback transitions from API replicas to the trainer."""

    async def publish(self, event: Transition) -> str | None:
        """Enqueue ``event`` once per event id: its entry id, or ``None`` for a duplicate."""
        ...

    async def publish_many(self, events: Sequence[Transition]) -> list[str | None]:
        """:meth:`publish` for a batch, in order (a repeated event id within the batch is
        a duplicate too). All or nothing per shard: an error means the caller retries
        the whole batch, which the de-duplication markers make safe."""
        ...

    async def read(self, count: int, block_ms: int) -> list[Delivery]:
        """Up to ``count`` deliveries, waiting at most ``block_ms`` when there are none
        (0: return at once)."""
        ...

    async def ack(self, ids: Sequence[str]) -> None:
        """Acknowledge entries without learning them (e.g. after dead-lettering)."""
        ...

    async def commit(self, deliveries: Sequence[Delivery]) -> list[Transition]:
        """Atomically per entry: mark learned, append to the buffer, acknowledge.

        Returns the transitions that were new; an event id already learned is only
        acknowledged (never learned twice).
        """
        ...

    async def buffered(self) -> list[Transition]:
        """Committed transitions not yet consumed by an update (survives restarts)."""
        ...

    async def buffered_count(self) -> int:
        """How many transitions :meth:`buffered` would return."""
        ...

    def restart_reading(self) -> None:
        """Deliver this consumer's unacknowledged entries again from the start."""
        ...

    async def consume_buffer(
        self, event_ids: Sequence[str], *, learned_total: int | None = None
    ) -> None:
        """Drop the buffered transitions of ``event_ids`` after an update used them and,
        in the same step, record ``learned_total`` as the ``events_learned`` counter.
        Idempotent: ids no longer buffered are ignored."""
        ...

    async def dead_letter(self, deliveries: Sequence[tuple[str, str, str]]) -> None:
        """Park ``(entry_id, raw_payload, reason)`` entries and acknowledge them."""
        ...

    async def quarantine(self, items: Sequence[tuple[str, str, str]]) -> None:
        """Park committed transitions ``(event_id, payload, reason)`` that must not be
        learned (already acknowledged; the caller drops them from the buffer)."""
        ...

    async def stats(self) -> dict[str, int]:
        """Counters: ``enqueued``, ``events_buffered``, ``duplicates``, ``dead_lettered``."""
        ...

    async def unread_age_s(self) -> float | None:
        """Seconds the oldest entry the consumer group has not read yet has waited (0:
        nothing unread; ``None``: no such group yet)."""
        ...


_PUBLISH_ONCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  local id = redis.call('XADD', KEYS[2], '*', 't', ARGV[2])
  redis.call('INCR', KEYS[3])
  redis.call('ZREM', KEYS[4], ARGV[3])
  return id
end
return false
"""

_PUBLISH_MANY = """
-- KEYS: stream, enqueued counter, awaiting set, then the dedup marker of each event
-- ARGV: dedup ttl, then payload and event id of each event
local out = {}
local added = 0
for i = 1, #KEYS - 3 do
  if redis.call('SET', KEYS[3 + i], '1', 'NX', 'EX', ARGV[1]) then
    out[i] = redis.call('XADD', KEYS[1], '*', 't', ARGV[2 * i])
    redis.call('ZREM', KEYS[3], ARGV[2 * i + 1])
    added = added + 1
  else
    out[i] = ''
  end
end
if added > 0 then redis.call('INCRBY', KEYS[2], added) end
return out
"""
""":data:`_PUBLISH_ONCE` for a batch of one stream, in one step ('' marks a duplicate)."""

_COMMIT = """
local new = 0
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[4]) then
  local seq = redis.call('HINCRBY', KEYS[4], 'buffer_seq', 1)
  redis.call('ZADD', KEYS[2], seq, ARGV[5])
  redis.call('HSET', KEYS[5], ARGV[5], ARGV[3])
  redis.call('HINCRBY', KEYS[4], 'events_buffered', 1)
  new = 1
else
  redis.call('HINCRBY', KEYS[4], 'duplicates', 1)
end
redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])
return new
"""
"""Commit one delivery: learned marker, buffer entry (by event id, in commit order) and
acknowledgement in one step. Re-running it for the same event only acknowledges."""

_CONSUME = """
for i = 1, #ARGV - 1 do
  redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i])
end
if ARGV[#ARGV] ~= '' then
  redis.call('HSET', KEYS[3], 'events_learned', ARGV[#ARGV])
end
return #ARGV - 1
"""
"""Remove buffered transitions *by event id* and set the learned counter. Idempotent: a
retry after a lost reply removes nothing more (trimming by count would)."""


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes | bytearray) else str(x)


class RedisStreamBus:
    """A :class:`FeedbackBus` on a Redis stream with a consumer group.

    The same object serves the producer side (API: :meth:`publish`) and the consumer
    side (trainer: everything else); the consumer-side arguments are unused by producers.
    """

    def __init__(
        self,
        client: Any,
        keys: RedisKeys,
        *,
        group: str = "trainer",
        consumer: str = "trainer-1",
        dedup_ttl_s: int = 7 * 24 * 3600,
        claim_idle_ms: int = 30_000,
        claim_every_s: float = 5.0,
        max_deliveries: int = 5,
    ) -> None:
        """``client`` is a ``redis.asyncio.Redis``; ``dedup_ttl_s`` bounds how long an
        event id is remembered; entries idle ``claim_idle_ms`` are claimed from dead
        consumers every ``claim_every_s``; entries delivered more than ``max_deliveries``
        times are dead-lettered."""
        self.client = client
        self.keys = keys
        self.group = group
        self.consumer = consumer
        self.dedup_ttl_s = int(dedup_ttl_s)
        self.claim_idle_ms = int(claim_idle_ms)
        self.claim_every_s = float(claim_every_s)
        self.max_deliveries = int(max_deliveries)
        self._publish = client.register_script(_PUBLISH_ONCE)
        self._publish_many = client.register_script(_PUBLISH_MANY)
        self._commit = client.register_script(_COMMIT)
        self._consume = client.register_script(_CONSUME)
        self._group_ready = False
        self._own_pending_cursor: str | None = "0"  # None once our backlog is drained
        self._claim_cursor = "0-0"
        self._last_claim = 0.0

    # producer side -------------------------------------------------------------------
    async def publish(self, event: Transition) -> str | None:
        """Enqueue once per event id (atomic with the de-duplication marker)."""
        k = self.keys
        res = await self._publish(
            keys=[k.feedback_seen(event.event_id), k.stream, k.enqueued_total,
                  k.awaiting_feedback],
            args=[self.dedup_ttl_s, transition_to_json(event), event.event_id],
        )
        return None if res is None else _s(res)

    async def publish_many(self, events: Sequence[Transition]) -> list[str | None]:
        """Enqueue a batch once per event id with one Lua call (atomic on the server:
        either every new event is appended with its marker, or the call failed)."""
        if not events:
            return []
        k = self.keys
        args: list[Any] = [self.dedup_ttl_s]
        for e in events:
            args += [transition_to_json(e), e.event_id]
        res = await self._publish_many(
            keys=[k.stream, k.enqueued_total, k.awaiting_feedback,
                  *[k.feedback_seen(e.event_id) for e in events]],
            args=args)
        return [_s(r) or None for r in res]

    # consumer side -------------------------------------------------------------------
    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) if missing."""
        if self._group_ready:
            return
        try:
            await self.client.xgroup_create(self.keys.stream, self.group, id="0",
                                            mkstream=True)
        except Exception as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def _delivery_counts(self, ids: Sequence[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry_id in ids:
            rows = await self.client.xpending_range(
                self.keys.stream, self.group, min=entry_id, max=entry_id, count=1
            )
            for row in rows:
                counts[_s(row["message_id"])] = int(row["times_delivered"])
        return counts

    async def _decode(
        self, entries: Sequence[Any], *, check_counts: bool
    ) -> list[Delivery]:
        ids = [_s(e[0]) for e in entries if e and e[1]]
        counts = await self._delivery_counts(ids) if check_counts else {}
        out: list[Delivery] = []
        parked: list[tuple[str, str, str]] = []
        for entry in entries:
            if not entry or not entry[1]:
                continue  # deleted entry (id with no fields)
            entry_id, fields = _s(entry[0]), entry[1]
            raw = _s(fields.get(b"t", fields.get("t", b"")))
            n = counts.get(entry_id, 1)
            try:
                event = transition_from_json(raw)
            except ValueError as exc:
                if n >= self.max_deliveries:
                    parked.append((entry_id, raw, str(exc)))
                # else: leave it pending; it comes back through XAUTOCLAIM
                continue
            if n > self.max_deliveries:
                parked.append((entry_id, raw, f"delivered {n} times"))
                continue
            out.append(Delivery(entry_id, event, n))
        if parked:
            await self.dead_letter(parked)
        return out

    async def read(self, count: int, block_ms: int) -> list[Delivery]:
        """Own pending entries first, then claimed idle ones, then new entries (waiting
        up to ``block_ms`` for those; 0: not at all)."""
        await self.ensure_group()
        stream = self.keys.stream
        if self._own_pending_cursor is not None:
            res = await self.client.xreadgroup(
                self.group, self.consumer, {stream: self._own_pending_cursor}, count=count
            )
            entries = res[0][1] if res else []
            if entries:
                self._own_pending_cursor = _s(entries[-1][0])
                return await self._decode(entries, check_counts=True)
            self._own_pending_cursor = None
            logger.info("own pending entries drained")
        now = time.monotonic()
        if now - self._last_claim >= self.claim_every_s:
            self._last_claim = now
            res = await self.client.xautoclaim(
                stream, self.group, self.consumer, self.claim_idle_ms,
                start_id=self._claim_cursor, count=count,
            )
            self._claim_cursor = _s(res[0])
            if res[1]:
                logger.info("claimed %d idle entries", len(res[1]))
                return await self._decode(res[1], check_counts=True)
        res = await self.client.xreadgroup(
            self.group, self.consumer, {stream: ">"}, count=count,
            block=block_ms if block_ms > 0 else None,  # BLOCK 0 would wait forever
        )
        entries = res[0][1] if res else []
        return await self._decode(entries, check_counts=False)

    async def ack(self, ids: Sequence[str]) -> None:
        """XACK the entries."""
        if ids:
            await self.client.xack(self.keys.stream, self.group, *ids)

    async def commit(self, deliveries: Sequence[Delivery]) -> list[Transition]:
        """Learned-marker + durable buffer append + XACK, one Lua call per entry."""
        k = self.keys
        new: list[Transition] = []
        async with self.client.pipeline(transaction=False) as pipe:
            for d in deliveries:
                await self._commit(
                    keys=[k.learned(d.event.event_id), k.trainer_buffer, k.stream,
                          k.trainer_stats, k.trainer_buffer_data],
                    args=[self.group, d.entry_id, transition_to_json(d.event),
                          self.dedup_ttl_s, d.event.event_id],
                    client=pipe,
                )
            results = await pipe.execute()
        for d, r in zip(deliveries, results, strict=True):
            if int(r) == 1:
                new.append(d.event)
        return new

    async def buffered(self) -> list[Transition]:
        """The durable buffer (commit order)."""
        ids = await self.client.zrange(self.keys.trainer_buffer, 0, -1)
        if not ids:
            return []
        raw = await self.client.hmget(self.keys.trainer_buffer_data, ids)
        # An id without payload cannot happen through the scripts; skip it rather than
        # stop the trainer on a hand-edited key.
        return [transition_from_json(x) for x in raw if x is not None]

    async def buffered_count(self) -> int:
        """Number of transitions in the durable buffer."""
        return int(await self.client.zcard(self.keys.trainer_buffer))

    async def consume_buffer(
        self, event_ids: Sequence[str], *, learned_total: int | None = None
    ) -> None:
        """Remove ``event_ids`` from the buffer and set the learned counter, atomically
        and idempotently (one Lua call)."""
        if not event_ids and learned_total is None:
            return
        k = self.keys
        await self._consume(
            keys=[k.trainer_buffer, k.trainer_buffer_data, k.trainer_stats],
            args=[*event_ids, "" if learned_total is None else str(int(learned_total))],
        )

    def restart_reading(self) -> None:
        """Re-read this consumer's own pending entries from the start: after a Redis error
        a delivered batch may never have reached the trainer (its reply was lost)."""
        self._own_pending_cursor = "0"

    async def dead_letter(self, deliveries: Sequence[tuple[str, str, str]]) -> None:
        """XADD to the dead-letter stream, then XACK the originals."""
        if not deliveries:
            return
        async with self.client.pipeline(transaction=True) as pipe:
            for entry_id, raw, reason in deliveries:
                pipe.xadd(self.keys.dead_letter,
                          {"entry_id": entry_id, "t": raw, "reason": reason})
                pipe.hincrby(self.keys.trainer_stats, "dead_lettered", 1)
            pipe.xack(self.keys.stream, self.group, *[d[0] for d in deliveries])
            await pipe.execute()
        logger.warning("dead-lettered %d entries: %s", len(deliveries),
                       "; ".join(f"{d[0]}: {d[2]}" for d in deliveries[:5]))

    async def quarantine(self, items: Sequence[tuple[str, str, str]]) -> None:
        """XADD to the dead-letter stream (the entries were acknowledged at commit)."""
        if not items:
            return
        async with self.client.pipeline(transaction=True) as pipe:
            for event_id, raw, reason in items:
                pipe.xadd(self.keys.dead_letter,
                          {"entry_id": "", "event_id": event_id, "t": raw, "reason": reason})
                pipe.hincrby(self.keys.trainer_stats, "dead_lettered", 1)
            await pipe.execute()

    async def unread_age_s(self) -> float | None:
        """Age of the first entry after the group's last delivered one (an entry id
        starts with its enqueue time in ms): how far behind the reader is, read from
        Redis alone, so it keeps growing while no trainer runs."""
        from redis.exceptions import ResponseError

        try:
            groups = await self.client.xinfo_groups(self.keys.stream)
        except ResponseError:  # no stream yet
            return None
        last = next((g["last-delivered-id"] for g in groups
                     if _s(g["name"]) == self.group), None)
        if last is None:
            return None
        nxt = await self.client.xrange(self.keys.stream, min="(" + _s(last), max="+",
                                       count=1)
        if not nxt:
            return 0.0
        enqueued_ms = int(_s(nxt[0][0]).split("-")[0])
        return max(0.0, time.time() - enqueued_ms / 1000.0)

    async def stats(self) -> dict[str, int]:
        """Counters from Redis."""
        enq = await self.client.get(self.keys.enqueued_total)
        h = await self.client.hgetall(self.keys.trainer_stats)
        out = {_s(k): int(v) for k, v in h.items()}
        out["enqueued"] = int(enq or 0)
        for name in ("events_buffered", "duplicates", "dead_lettered"):
            out.setdefault(name, 0)
        return out
