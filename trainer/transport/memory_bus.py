"""The feedback bus's in-memory twin: the semantics of the Redis stream bus in one
process (publish once per event id, pending entries, commit, idempotent trim by id,
dead letters), for tests and in-process drivers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

from policy.types import Transition
from trainer.transport.bus import Delivery, transition_to_json


class InMemoryBus:
    """A :class:`FeedbackBus` inside one process (tests, in-process driver)."""

    def __init__(self, *, max_deliveries: int = 5) -> None:
        """``max_deliveries``: deliveries after which an unacknowledged entry is parked."""
        self.max_deliveries = max_deliveries
        self._entries: dict[str, Transition] = {}
        self._enqueued_at: dict[str, float] = {}  # entry id -> time.time() of publish
        self._unread: list[str] = []
        self._pending: dict[str, int] = {}  # entry id -> deliveries
        self._seen: set[str] = set()
        self._learned: set[str] = set()
        self._buffer: list[Transition] = []
        self._seq = 0
        self._cond = asyncio.Condition()
        self.dead: list[tuple[str, str, str]] = []
        self.counters = {"enqueued": 0, "events_buffered": 0, "duplicates": 0,
                         "dead_lettered": 0}

    async def publish(self, event: Transition) -> str | None:
        """Enqueue once per event id."""
        if event.event_id in self._seen:
            return None
        self._seen.add(event.event_id)
        self._seq += 1
        entry_id = f"{self._seq}-0"
        self._entries[entry_id] = event
        self._enqueued_at[entry_id] = time.time()
        async with self._cond:
            self._unread.append(entry_id)
            self.counters["enqueued"] += 1
            self._cond.notify_all()
        return entry_id

    async def publish_many(self, events: Sequence[Transition]) -> list[str | None]:
        """:meth:`publish` for each event, in order."""
        return [await self.publish(e) for e in events]

    async def redeliver_pending(self) -> None:
        """Put unacknowledged entries back in front (what a restart + claim does)."""
        async with self._cond:
            self._unread = [*sorted(self._pending, key=lambda s: int(s.split("-")[0])),
                            *self._unread]
            self._cond.notify_all()

    async def read(self, count: int, block_ms: int) -> list[Delivery]:
        """Up to ``count`` deliveries, waiting up to ``block_ms``."""
        async with self._cond:
            if not self._unread:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cond.wait(), block_ms / 1000)
            batch, self._unread = self._unread[:count], self._unread[count:]
        out: list[Delivery] = []
        parked: list[tuple[str, str, str]] = []
        for entry_id in batch:
            n = self._pending.get(entry_id, 0) + 1
            self._pending[entry_id] = n
            event = self._entries[entry_id]
            if n > self.max_deliveries:
                parked.append((entry_id, transition_to_json(event), f"delivered {n} times"))
            else:
                out.append(Delivery(entry_id, event, n))
        await self.dead_letter(parked)
        return out

    async def ack(self, ids: Sequence[str]) -> None:
        """Forget the entries."""
        for entry_id in ids:
            self._pending.pop(entry_id, None)

    async def commit(self, deliveries: Sequence[Delivery]) -> list[Transition]:
        """Mark learned, buffer, acknowledge."""
        new: list[Transition] = []
        for d in deliveries:
            if d.event.event_id in self._learned:
                self.counters["duplicates"] += 1
            else:
                self._learned.add(d.event.event_id)
                self._buffer.append(d.event)
                self.counters["events_buffered"] += 1
                new.append(d.event)
            self._pending.pop(d.entry_id, None)
        return new

    async def buffered(self) -> list[Transition]:
        """The buffer (oldest first)."""
        return list(self._buffer)

    async def buffered_count(self) -> int:
        """Size of the buffer."""
        return len(self._buffer)

    async def consume_buffer(
        self, event_ids: Sequence[str], *, learned_total: int | None = None
    ) -> None:
        """Drop the transitions of ``event_ids`` (idempotent)."""
        gone = set(event_ids)
        self._buffer = [t for t in self._buffer if t.event_id not in gone]
        if learned_total is not None:
            self.counters["events_learned"] = int(learned_total)

    def restart_reading(self) -> None:
        """Nothing to do: in one process no reply can be lost."""

    async def dead_letter(self, deliveries: Sequence[tuple[str, str, str]]) -> None:
        """Park and acknowledge."""
        for d in deliveries:
            self.dead.append(d)
            self._pending.pop(d[0], None)
            self.counters["dead_lettered"] += 1

    async def quarantine(self, items: Sequence[tuple[str, str, str]]) -> None:
        """Park committed transitions."""
        for item in items:
            self.dead.append(item)
            self.counters["dead_lettered"] += 1

    async def unread_age_s(self) -> float | None:
        """Seconds the oldest unread entry has waited (0: nothing unread)."""
        if not self._unread:
            return 0.0
        return max(0.0, time.time() - self._enqueued_at[self._unread[0]])

    async def stats(self) -> dict[str, int]:
        """Counters."""
        return dict(self.counters)
