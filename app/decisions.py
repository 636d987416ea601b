"""Decision store: what the service decided for each event id, in Redis with a TTL.

Feedback is joined with the stored decision (state, slate, propensities, version) to
form a :class:`~policy.types.Transition`; the client never sends the state back, so it
cannot be forged or lost between calls.

Memory is bounded twice: every decision expires after ``ttl_s``, and at most ``cap``
decisions are kept: an index (sorted set ``<ns>:decisions``, event id → creation time)
lets each write evict the oldest beyond the cap in the same Lua call.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from policy.types import Transition
from trainer.transport.keys import RedisKeys


@dataclass(frozen=True)
class Decision:
    """One recommendation as the service made it."""

    event_id: str
    user_id: int
    history: tuple[int, ...]
    items: tuple[int, ...]
    propensities: tuple[float, ...]
    sources: tuple[str, ...]
    policy_version: int
    created_at: float
    arm: str = "mixed"
    """A/B arm that decided (``app.ab``)."""

    def to_json(self) -> bytes:
        """Compact JSON (UTF-8)."""
        return orjson.dumps({
            "u": self.user_id, "h": self.history, "i": self.items,
            "p": self.propensities, "s": self.sources,
            "v": self.policy_version, "t": self.created_at,
            **({} if self.arm == "mixed" else {"a": self.arm}),
        }, option=orjson.OPT_SERIALIZE_NUMPY)

    @classmethod
    def from_json(cls, event_id: str, raw: str | bytes) -> Decision:
        """Inverse of :meth:`to_json`."""
        d = orjson.loads(raw)
        return cls(event_id, int(d["u"]), tuple(d["h"]), tuple(d["i"]), tuple(d["p"]),
                   tuple(d["s"]), int(d["v"]), float(d["t"]), str(d.get("a", "mixed")))

    def transition(self, item_id: int, reward: float, done: bool) -> Transition:
        """Join with feedback on ``item_id`` (which must be in the slate)."""
        pos = self.items.index(item_id)
        return Transition(
            event_id=self.event_id, user_id=self.user_id, history=self.history,
            action=item_id, reward=float(reward), done=bool(done),
            propensity=float(self.propensities[pos]), policy_version=self.policy_version,
            source=self.sources[pos] if pos < len(self.sources) else "",
        )


_SAVE = """
-- KEYS: index, awaiting, decision key of each event
-- ARGV: now, ttl, cap, due ('' = no default-reward sweep), decision key prefix,
--       event ids..., decision JSONs...
local n = #KEYS - 2
local now, ttl, cap, due = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
for i = 1, n do
  local id = ARGV[5 + i]
  redis.call('SET', KEYS[2 + i], ARGV[5 + n + i], 'EX', ttl)
  redis.call('ZADD', KEYS[1], now, id)
  if due ~= '' then redis.call('ZADD', KEYS[2], tonumber(due), id) end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
local over = redis.call('ZCARD', KEYS[1]) - cap
local evicted = 0
if over > 0 then
  local old = redis.call('ZPOPMIN', KEYS[1], over)
  for j = 1, #old, 2 do
    redis.call('DEL', ARGV[5] .. old[j])
    redis.call('ZREM', KEYS[2], old[j])
    evicted = evicted + 1
  end
end
return evicted
"""

_POP_EXPIRED = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #ids > 0 then redis.call('ZREM', KEYS[1], unpack(ids)) end
return ids
"""


class DecisionStore:
    """Decisions in Redis under ``<ns>:decision:<event id>``."""

    def __init__(self, client: Any, keys: RedisKeys, *, ttl_s: int,
                 default_reward_after_s: float | None = None,
                 cap: int = 1_000_000, blocking_client: Any | None = None) -> None:
        """``default_reward_after_s``: when set, decisions are also registered for the
        default-reward sweep after that many seconds. ``cap``: most decisions kept.
        ``blocking_client`` (a redis-py blocking client of the same server) enables
        :meth:`save_many_blocking`, for writers on a worker thread."""
        self.client = client
        self.blocking_client = blocking_client
        self._save_blocking = (None if blocking_client is None
                               else blocking_client.register_script(_SAVE))
        self.keys = keys
        self.ttl_s = int(ttl_s)
        self.cap = int(cap)
        self.default_reward_after_s = default_reward_after_s
        self.index = f"{keys.namespace}:decisions"
        self._prefix = keys.decision("")
        self._pop = client.register_script(_POP_EXPIRED)
        self._save = client.register_script(_SAVE)

    async def save_many(self, decisions: Sequence[Decision]) -> int:
        """Write a batch of decisions in one round trip (one Lua call); returns how many
        old decisions were evicted to stay within the cap."""
        if not decisions:
            return 0
        return int(await self._save(**self._save_call(decisions)))

    def save_many_blocking(self, decisions: Sequence[Decision]) -> int:
        """:meth:`save_many` on the blocking client (the interpreter is free while it
        waits for Redis); for the service's forward-pass thread."""
        if self._save_blocking is None:
            raise RuntimeError("this DecisionStore has no blocking client")
        if not decisions:
            return 0
        return int(self._save_blocking(**self._save_call(decisions)))

    def _save_call(self, decisions: Sequence[Decision]) -> dict[str, list[Any]]:
        now = time.time()
        due = ("" if self.default_reward_after_s is None
               else repr(now + self.default_reward_after_s))
        keys = [self.index, self.keys.awaiting_feedback,
                *[self.keys.decision(d.event_id) for d in decisions]]
        args = [repr(now), self.ttl_s, self.cap, due, self._prefix,
                *[d.event_id for d in decisions], *[d.to_json() for d in decisions]]
        return {"keys": keys, "args": args}

    async def get(self, event_id: str) -> Decision | None:
        """The decision, or ``None`` when unknown or expired."""
        raw = await self.client.get(self.keys.decision(event_id))
        return None if raw is None else Decision.from_json(event_id, raw)

    async def get_many(self, event_ids: Sequence[str]) -> list[Decision | None]:
        """The decisions of ``event_ids`` in one round trip (MGET), in order; ``None``
        where unknown or expired."""
        if not event_ids:
            return []
        raw = await self.client.mget([self.keys.decision(e) for e in event_ids])
        return [None if r is None else Decision.from_json(e, r)
                for e, r in zip(event_ids, raw, strict=True)]

    async def pop_expired(self, limit: int = 500) -> list[str]:
        """Event ids whose feedback wait is over (each returned to one caller only)."""
        ids = await self._pop(keys=[self.keys.awaiting_feedback], args=[time.time(), limit])
        return [x.decode() if isinstance(x, bytes) else str(x) for x in ids]
