"""Decision store: what the service decided for each event id, in Redis with a TTL.

Feedback is joined with the stored decision (state, slate, propensities, version) to
form a :class:`~policy.types.Transition`; the client never sends the state back, so it
cannot be forged or lost between calls.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from policy.types import Transition
from trainer.keys import RedisKeys


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

    def to_json(self) -> str:
        """Compact JSON."""
        return json.dumps({
            "u": self.user_id, "h": list(self.history), "i": list(self.items),
            "p": list(self.propensities), "s": list(self.sources),
            "v": self.policy_version, "t": self.created_at,
        }, separators=(",", ":"))

    @classmethod
    def from_json(cls, event_id: str, raw: str | bytes) -> Decision:
        """Inverse of :meth:`to_json`."""
        d = json.loads(raw)
        return cls(event_id, int(d["u"]), tuple(d["h"]), tuple(d["i"]), tuple(d["p"]),
                   tuple(d["s"]), int(d["v"]), float(d["t"]))

    def transition(self, item_id: int, reward: float, done: bool) -> Transition:
        """Join with feedback on ``item_id`` (which must be in the slate)."""
        pos = self.items.index(item_id)
        return Transition(
            event_id=self.event_id, user_id=self.user_id, history=self.history,
            action=item_id, reward=float(reward), done=bool(done),
            propensity=float(self.propensities[pos]), policy_version=self.policy_version,
            source=self.sources[pos] if pos < len(self.sources) else "",
        )


_POP_EXPIRED = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #ids > 0 then redis.call('ZREM', KEYS[1], unpack(ids)) end
return ids
"""


class DecisionStore:
    """Decisions in Redis under ``<ns>:decision:<event id>``."""

    def __init__(self, client: Any, keys: RedisKeys, *, ttl_s: int,
                 default_reward_after_s: float | None = None) -> None:
        """``default_reward_after_s``: when set, decisions are also registered for the
        default-reward sweep after that many seconds."""
        self.client = client
        self.keys = keys
        self.ttl_s = int(ttl_s)
        self.default_reward_after_s = default_reward_after_s
        self._pop = client.register_script(_POP_EXPIRED)

    async def save_many(self, decisions: Sequence[Decision]) -> None:
        """Write a batch of decisions in one round trip."""
        if not decisions:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for d in decisions:
                pipe.set(self.keys.decision(d.event_id), d.to_json(), ex=self.ttl_s)
            if self.default_reward_after_s is not None:
                due = time.time() + self.default_reward_after_s
                pipe.zadd(self.keys.awaiting_feedback,
                          {d.event_id: due for d in decisions})
            await pipe.execute()

    async def get(self, event_id: str) -> Decision | None:
        """The decision, or ``None`` when unknown or expired."""
        raw = await self.client.get(self.keys.decision(event_id))
        return None if raw is None else Decision.from_json(event_id, raw)

    async def pop_expired(self, limit: int = 500) -> list[str]:
        """Event ids whose feedback wait is over (each returned to one caller only)."""
        ids = await self._pop(keys=[self.keys.awaiting_feedback], args=[time.time(), limit])
        return [x.decode() if isinstance(x, bytes) else str(x) for x in ids]
