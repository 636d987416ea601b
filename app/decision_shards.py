"""Decisions of a sharded deployment: :class:`ShardedDecisionStore`.

A decision lives in its event's shard (``{<ns>:s<s>}:decision:<event id>``, with the
shard's own index and awaiting set), so the one Lua call that saves a batch, the
feedback that reads it back and the publish script that clears its default-reward
deadline each touch a single cluster slot. A batch is split by shard and the parts are
written concurrently; the decision cap is split evenly over the shards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from app.decisions import Decision, DecisionStore
from trainer.transport.client import sync_redis_client
from trainer.transport.shards import Shards

if TYPE_CHECKING:
    from app.settings import ServiceSettings


class ShardedDecisionStore(DecisionStore):
    """A :class:`DecisionStore` per shard behind the one interface the routes use."""

    def __init__(self, client: Any, shards: Shards, *, ttl_s: int,
                 default_reward_after_s: float | None = None,
                 cap: int = 1_000_000, blocking_client: Any | None = None) -> None:
        """As :class:`DecisionStore`; each shard keeps at most ``ceil(cap / shards)``."""
        super().__init__(client, shards.keys, ttl_s=ttl_s,
                         default_reward_after_s=default_reward_after_s, cap=cap,
                         blocking_client=blocking_client)
        self.shards = shards
        per_shard = -(-int(cap) // shards.count)
        self.parts = [DecisionStore(client, k, ttl_s=ttl_s,
                                    default_reward_after_s=default_reward_after_s,
                                    cap=per_shard, blocking_client=blocking_client)
                      for k in shards.all_shard_keys()]

    async def save_many(self, decisions: Sequence[Decision]) -> int:
        """Write the batch, one Lua call per shard it touches; returns how many old
        decisions were evicted."""
        evicted = await asyncio.gather(*[self.parts[s].save_many(g)
                                         for s, g in self._by_shard(decisions).items()])
        return int(sum(evicted))

    def save_many_blocking(self, decisions: Sequence[Decision]) -> int:
        """:meth:`save_many` on the blocking client, one Lua call per shard."""
        return sum(self.parts[s].save_many_blocking(g)
                   for s, g in self._by_shard(decisions).items())

    def _by_shard(self, decisions: Sequence[Decision]) -> dict[int, list[Decision]]:
        groups: dict[int, list[Decision]] = {}
        for d in decisions:
            groups.setdefault(self.shards.of_event(d.event_id), []).append(d)
        return groups

    async def get(self, event_id: str) -> Decision | None:
        """The decision from the event id's shard, or ``None``."""
        return await self.parts[self.shards.of_event(event_id)].get(event_id)

    async def get_many(self, event_ids: Sequence[str]) -> list[Decision | None]:
        """The decisions of ``event_ids``, one MGET per shard they touch (concurrently;
        a shard's keys share one cluster slot), in order."""
        groups: dict[int, list[int]] = {}
        for i, e in enumerate(event_ids):
            groups.setdefault(self.shards.of_event(e), []).append(i)
        shards = list(groups)
        parts = await asyncio.gather(*[
            self.parts[s].get_many([event_ids[i] for i in groups[s]]) for s in shards])
        out: list[Decision | None] = [None] * len(event_ids)
        for s, found in zip(shards, parts, strict=True):
            for i, d in zip(groups[s], found, strict=True):
                out[i] = d
        return out

    async def pop_expired(self, limit: int = 500) -> list[str]:
        """Event ids whose feedback wait is over, from every shard (at most ``limit``
        per shard)."""
        parts = await asyncio.gather(*[p.pop_expired(limit) for p in self.parts])
        return [e for part in parts for e in part]


def build_decision_store(settings: ServiceSettings, url: str,
                         client: Any | None) -> DecisionStore:
    """The deployment's decision store on ``url`` (one stream's layout or the sharded
    one), with a blocking client for writers off the event loop; ``client`` is the
    asyncio client, or ``None`` in a process that only writes (the decider), which then
    uses the blocking client for everything."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # The forward-pass thread (or the decider) writes each batch's decisions itself, on
    # a blocking client: the event loop spends no time on those round trips.
    blocking = sync_redis_client(
        url, cluster=settings.redis_cluster, socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s, retry=Retry(NoBackoff(), 0))
    options: dict[str, Any] = dict(
        ttl_s=settings.decision_ttl_s,
        default_reward_after_s=(settings.default_reward_after_s
                                if settings.default_reward is not None else None),
        cap=settings.decision_cap, blocking_client=blocking)
    shards = settings.shards(url)
    client = blocking if client is None else client
    return (DecisionStore(client, shards.keys, **options) if not shards.tagged
            else ShardedDecisionStore(client, shards, **options))
