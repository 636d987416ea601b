"""Policy versions in Redis: the trainer publishes, API replicas load, admins roll back.

Layout (see :class:`trainer.transport.keys.RedisKeys`; in a sharded or cluster
deployment every policy key carries the deployment's hash tag, :mod:`.shards`): each
version's serialized policy under a blob key and its metadata as JSON beside it; a list
of kept versions (the last K); a ``current`` key naming the version to serve; and a
pub/sub channel on which every change of ``current`` is announced. Replicas subscribe
*and* poll ``current`` so a lost notification delays a swap by at most one poll interval.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.transport.keys import RedisKeys

if TYPE_CHECKING:
    from policy.mixed import MixedPolicy

logger = logging.getLogger(__name__)


_CLEAR_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class VersionNotFoundError(LookupError):
    """The requested policy version is not (or no longer) kept."""


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes | bytearray) else str(x)


def policy_summary(policy: MixedPolicy) -> dict[str, Any]:
    """JSON-safe metadata of a policy (what ``GET /v1/policy`` and the meta key show)."""
    meta: dict[str, Any] = {k: v for k, v in dict(policy.metadata).items()
                            if isinstance(v, str | int | float | bool) or v is None}
    meta.update(version=int(policy.version), alpha=float(policy.alpha),
                scheme=str(policy.scheme), num_items=int(policy.num_items))
    if policy.beta_pool is not None:
        meta["beta_pool"] = list(policy.beta_pool)
    return meta


def nonfinite_parameters(policy: MixedPolicy) -> list[str]:
    """Names of the policy's tensors (and ``alpha``) holding NaN or ±inf; empty when the
    policy is safe to serve."""
    import torch

    bad: list[str] = []
    if not math.isfinite(float(policy.alpha)):
        bad.append("alpha")
    nets: list[tuple[str, Any]] = [("theta", policy.theta)]
    if policy.beta is not None:
        nets.append(("beta", policy.beta))
    for prefix, net in nets:
        for name, tensor in net.state_dict().items():
            if torch.is_tensor(tensor) and tensor.is_floating_point() and \
                    not bool(torch.isfinite(tensor).all()):
                bad.append(f"{prefix}.{name}")
    return bad


class PublishedPolicies:
    """Versioned policy publication in Redis for one namespace."""

    def __init__(self, client: Any, keys: RedisKeys, *, keep: int = 5) -> None:
        """``client``: ``redis.asyncio.Redis``; ``keep``: versions retained for rollback."""
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.client = client
        self.keys = keys
        self.keep = keep

    async def next_version(self) -> int:
        """A fresh, never reused version number."""
        return int(await self.client.incr(self.keys.policy_seq))

    async def ensure_seq_at_least(self, version: int) -> None:
        """Make sure later :meth:`next_version` calls exceed ``version`` (after a restore)."""
        cur = int(await self.client.get(self.keys.policy_seq) or 0)
        if cur < version:
            await self.client.set(self.keys.policy_seq, version)

    async def publish(self, policy: MixedPolicy, blob: bytes, *, promote: bool = True) -> int:
        """Store ``blob`` (``policy_to_bytes(policy)``) as ``policy.version`` and announce
        it: as the current version (``promote``), else as the candidate that the
        promotion gate and shadow mode evaluate first. Versions beyond the last ``keep``
        are dropped, never the current or the candidate one."""
        k = self.keys
        version = int(policy.version)
        meta = policy_summary(policy)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(k.policy_blob(version), blob)
            pipe.set(k.policy_meta(version), json.dumps(meta))
            pipe.rpush(k.policy_versions, version)
            pipe.set(k.policy_current if promote else k.policy_candidate, version)
            pipe.lrange(k.policy_versions, 0, -1)
            # Two GETs, not MGET: cluster pipelines refuse MGET (every policy key shares
            # one hash tag in a cluster, so the transaction itself is allowed).
            pipe.get(k.policy_current)
            pipe.get(k.policy_candidate)
            res = await pipe.execute()
        kept = [int(_s(v)) for v in res[-3]]
        protected = {int(_s(v)) for v in res[-2:] if v is not None}
        if len(kept) > self.keep:
            old = [v for v in kept[: len(kept) - self.keep] if v not in protected]
            async with self.client.pipeline(transaction=True) as pipe:
                for v in old:
                    pipe.delete(k.policy_blob(v), k.policy_meta(v))
                    pipe.lrem(k.policy_versions, 0, v)
                await pipe.execute()
        await self.client.publish(k.policy_channel, str(version))
        return version

    async def candidate_version(self) -> int | None:
        """The version waiting for promotion, or ``None``."""
        v = await self.client.get(self.keys.policy_candidate)
        return None if v is None else int(v)

    async def promote(self, version: int) -> None:
        """Make the kept ``version`` current (it stops being the candidate)."""
        k = self.keys
        if not await self.client.exists(k.policy_blob(version)):
            raise VersionNotFoundError(f"policy version {version} is not kept")
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(k.policy_current, version)
            pipe.get(k.policy_candidate)
            res = await pipe.execute()
        if res[1] is not None and int(_s(res[1])) == version:
            # Only this version's own promotion clears it (a newer candidate stays).
            await self.client.eval(_CLEAR_IF_EQUAL, 1, k.policy_candidate, version)
        await self.client.publish(k.policy_channel, str(version))

    async def withdraw_candidate(self, version: int) -> None:
        """Stop offering ``version`` as the candidate (a newer candidate stays)."""
        await self.client.eval(_CLEAR_IF_EQUAL, 1, self.keys.policy_candidate, version)
        await self.client.publish(self.keys.policy_channel, "candidate")

    async def annotate(self, version: int, **fields: Any) -> None:
        """Merge JSON-safe ``fields`` into a kept version's metadata (e.g. the gate's
        verdict, which ``GET /v1/policy`` shows)."""
        meta = await self.meta(version)
        meta.update(fields)
        await self.client.set(self.keys.policy_meta(version), json.dumps(meta))

    async def log_event(self, kind: str, **fields: Any) -> None:
        """Append a deployment event (promotion, rejection, rollback) to the policy log
        stream (capped at about 10,000 entries)."""
        entry = {"kind": kind, **{k: json.dumps(v) for k, v in fields.items()}}
        await self.client.xadd(self.keys.policy_log, entry, maxlen=10_000, approximate=True)

    async def events(self, count: int = 100) -> list[dict[str, Any]]:
        """The latest deployment events, newest first."""
        out: list[dict[str, Any]] = []
        for entry_id, raw in await self.client.xrevrange(self.keys.policy_log, count=count):
            d = {_s(k): _s(v) for k, v in raw.items()}
            kind = d.pop("kind", "")
            out.append({"id": _s(entry_id), "kind": kind,
                        **{k: json.loads(v) for k, v in d.items()}})
        return out

    async def current_version(self) -> int | None:
        """The version replicas should serve, or ``None`` before the first publication."""
        v = await self.client.get(self.keys.policy_current)
        return None if v is None else int(v)

    async def versions(self) -> list[int]:
        """Kept versions, oldest first."""
        return [int(_s(v)) for v in await self.client.lrange(self.keys.policy_versions, 0, -1)]

    async def meta(self, version: int) -> dict[str, Any]:
        """Metadata of a kept version."""
        raw = await self.client.get(self.keys.policy_meta(version))
        if raw is None:
            raise VersionNotFoundError(f"policy version {version} is not kept")
        return dict(json.loads(raw))

    async def blob(self, version: int) -> bytes:
        """Serialized policy of a kept version."""
        raw = await self.client.get(self.keys.policy_blob(version))
        if raw is None:
            raise VersionNotFoundError(f"policy version {version} is not kept")
        return bytes(raw)

    async def load(self, version: int) -> MixedPolicy:
        """Deserialize a kept version."""
        import asyncio

        from policy.checkpoint import policy_from_bytes

        blob = await self.blob(version)
        # Deserializing weights is CPU work; keep the event loop free.
        return await asyncio.to_thread(policy_from_bytes, blob)

    async def rollback(self, to: int | None = None) -> int:
        """Make an earlier kept version current (default: the one before current)."""
        kept = await self.versions()
        cur = await self.current_version()
        if to is None:
            earlier = [v for v in kept if cur is None or v < cur]
            if not earlier:
                raise VersionNotFoundError(f"no kept version before {cur} (kept: {kept})")
            to = earlier[-1]
        if to not in kept or not await self.client.exists(self.keys.policy_blob(to)):
            raise VersionNotFoundError(f"policy version {to} is not kept (kept: {kept})")
        await self.client.set(self.keys.policy_current, to)
        await self.client.publish(self.keys.policy_channel, str(to))
        logger.warning("policy rolled back from %s to %d", cur, to)
        return int(to)


async def start_policy(
    policies: PublishedPolicies,
    *,
    checkpoint: str | Path | None,
    num_items: int,
    max_len: int,
    seed: int,
    tolerate: tuple[type[BaseException], ...] = (),
) -> MixedPolicy:
    """The policy a process starts serving or training from: Redis' current version when
    it holds one with finite values, else :func:`policy.checkpoint.local_policy`.

    Exceptions in ``tolerate`` (the API passes its "Redis unreachable" errors) fall back
    to the local policy instead of stopping start-up."""
    import asyncio

    from policy.checkpoint import local_policy

    try:
        version = await policies.current_version()
        if version is not None:
            policy = await policies.load(version)
            bad = await asyncio.to_thread(nonfinite_parameters, policy)
            if not bad:
                logger.info("starting from Redis' current policy version %d", version)
                return policy
            logger.error("current version %d has non-finite values (%s); starting from the "
                         "local policy", version, ", ".join(bad[:5]))
    except VersionNotFoundError as exc:
        logger.warning("%s; starting from the local policy", exc)
    except tolerate as exc:
        logger.warning("Redis unreachable at start-up (%s); starting from the local policy",
                       exc)
    return await asyncio.to_thread(local_policy, checkpoint, num_items=num_items,
                                   max_len=max_len, seed=seed)
