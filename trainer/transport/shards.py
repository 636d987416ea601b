"""Sharded feedback streams: which shard an event belongs to, and each shard's keys.

With one shard on a plain Redis (the default) every key is ``<ns>:…`` exactly as
:class:`~trainer.transport.keys.RedisKeys` names it. With ``count > 1`` shards, or on a
Redis Cluster, the layout is *tagged*: shard ``s`` keeps all its keys under
``{<ns>:s<s>}:…`` and the deployment-wide keys (policy versions, trainer counters, A/B
counters) live under ``{<ns>}:…``. Redis hashes only the part inside the braces, so every
key one Lua script or transaction touches — a shard's dedup marker, stream, counters,
awaiting set, decisions and trainer buffer, or the policy keys — sits in one cluster slot.

An event's shard is derived from its event id alone (the feedback route has nothing
else), and the service mints event ids whose shard is the user's, so one user's events
stay in one stream, in order. Changing the shard count re-routes event ids: change it
only on a drained deployment (no pending decisions, empty streams and buffers).
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass

from trainer.transport.keys import RedisKeys

MAX_SHARDS = 1024
"""Upper bound of the shard count (event-id minting searches 65,536 suffixes)."""


def _crc(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


@dataclass(frozen=True)
class Shards:
    """Shard count and key layout of one deployment."""

    namespace: str = "ialp"
    """The deployment's key prefix (``IALP_NAMESPACE``)."""
    count: int = 1
    """Number of feedback streams (``IALP_STREAM_SHARDS``)."""
    cluster: bool = False
    """Redis is a cluster: keys are tagged even with one shard."""

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise ValueError(f"shard count must be in 1..{MAX_SHARDS}, not {self.count}")

    @property
    def tagged(self) -> bool:
        """Whether keys carry hash tags (more than one shard, or a cluster)."""
        return self.count > 1 or self.cluster

    @property
    def keys(self) -> RedisKeys:
        """Deployment-wide keys: policy publication, trainer counters, A/B counters."""
        return RedisKeys("{" + self.namespace + "}") if self.tagged else RedisKeys(self.namespace)

    def shard_keys(self, shard: int) -> RedisKeys:
        """Keys of one shard: stream, dead letters, markers, decisions, trainer buffer."""
        if not 0 <= shard < self.count:
            raise ValueError(f"shard {shard} out of range 0..{self.count - 1}")
        if not self.tagged:
            return RedisKeys(self.namespace)
        return RedisKeys("{" + f"{self.namespace}:s{shard}" + "}")

    def all_shard_keys(self) -> list[RedisKeys]:
        """:meth:`shard_keys` of every shard, in shard order."""
        return [self.shard_keys(s) for s in range(self.count)]

    def of_user(self, user: int) -> int:
        """The shard of a user (stable across processes and restarts)."""
        return 0 if self.count == 1 else _crc(str(int(user))) % self.count

    def of_event(self, event_id: str) -> int:
        """The shard of an event id: where its decision, marker and stream entry live."""
        return 0 if self.count == 1 else _crc(event_id) % self.count

    def new_event_id(self, user: int) -> str:
        """A fresh 32-hex-digit event id whose shard is ``user``'s.

        With one shard: 128 random bits (as ``uuid4().hex``, at a fraction of its cost).
        Otherwise 28 random hex digits and the first 4-digit suffix that lands the id in
        the user's shard (CRC-32 is cheap, and about ``count`` suffixes are tried)."""
        if self.count == 1:
            return os.urandom(16).hex()
        target = self.of_user(user)
        prefix = os.urandom(14).hex()
        seed = _crc(prefix)
        for n in range(1 << 16):
            suffix = f"{n:04x}"
            if zlib.crc32(suffix.encode(), seed) % self.count == target:
                return prefix + suffix
        raise RuntimeError("no event-id suffix for the shard")  # pragma: no cover
