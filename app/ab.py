"""A/B arms: users (or requests) bucketed between the mixed policy and baselines.

``IALP_AB_ARMS`` maps arm names to traffic shares, e.g.
``{"mixed": 0.8, "popular": 0.1, "random": 0.05, "version:12": 0.05}``:

* ``mixed``: the served policy π̃ (the product);
* ``random``: k distinct items drawn uniformly from the allowed ones (propensity of the
  item at position j: 1 / (allowed − j));
* ``popular``: the k allowed items with the most positive feedback so far (all arms,
  every replica: a Redis hash, refreshed every ``IALP_AB_POPULARITY_REFRESH_S``), items
  already in the history skipped while others remain; ties by the policy's popularity
  prior when it has one, else by index; propensity 1 (deterministic);
* ``version:N``: a pinned kept version, loaded once at start-up.

Bucketing is sticky per user (a hash of salt and user id: a user keeps an arm across
requests and replicas) or per request (``IALP_AB_BUCKETING=request``). Feedback is counted
per arm in Redis (count, sum, sum of squares: ``GET /v1/ab`` reports means, 95 % intervals
and the difference to ``mixed``) and in Prometheus. The trainer learns from the policy arms
(``mixed``, ``version:N``); the ``random`` and ``popular`` arms are controls: their
feedback is consumed, counted and exported, never learned.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from policy.types import CONTROL_SOURCES

if TYPE_CHECKING:
    from policy.mixed import MixedPolicy
    from policy.types import Slate

logger = logging.getLogger(__name__)

MIXED = "mixed"
CONTROL_ARMS = CONTROL_SOURCES
"""Baseline arms whose feedback the trainer never learns from (``Transition.source``)."""


class ArmsError(ValueError):
    """An ``IALP_AB_ARMS`` value that cannot be served."""


def parse_arms(spec: Mapping[str, float]) -> list[tuple[str, float]]:
    """Validated ``(arm, share)`` pairs in a fixed order (shares must sum to 1)."""
    arms: list[tuple[str, float]] = []
    for name, share in spec.items():
        if name not in (MIXED, *CONTROL_ARMS) and not _pinned_version(name):
            raise ArmsError(f"unknown A/B arm {name!r}: use mixed, random, popular or "
                            "version:N")
        if not (isinstance(share, int | float) and math.isfinite(share) and share > 0):
            raise ArmsError(f"A/B arm {name!r} needs a positive share, got {share!r}")
        arms.append((name, float(share)))
    if arms and MIXED not in dict(arms):
        raise ArmsError("A/B arms must include 'mixed' (the served policy)")
    total = sum(s for _, s in arms)
    if arms and abs(total - 1.0) > 1e-6:
        raise ArmsError(f"A/B arm shares must sum to 1, got {total:g}")
    return arms


def _pinned_version(name: str) -> int | None:
    head, _, tail = name.partition(":")
    return int(tail) if head == "version" and tail.isdigit() else None


def bucket(salt: str, key: str) -> float:
    """A uniform number in [0, 1) fixed by ``salt`` and ``key``."""
    digest = hashlib.blake2b(f"{salt}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


class ABArms:
    """Assigns arms and serves the baseline ones."""

    def __init__(self, arms: Sequence[tuple[str, float]], *, num_items: int, salt: str,
                 sticky: bool, prior: np.ndarray | None = None, seed: int = 0) -> None:
        self.arms = list(arms)
        self.names = [a for a, _ in self.arms]
        self._edges = np.cumsum([s for _, s in self.arms])
        self.num_items = num_items
        self.salt = salt
        self.sticky = sticky
        # Ties between equally popular items: the operator's prior, else the lower index.
        tie = np.asarray(prior, dtype=np.float64) if prior is not None else \
            -np.arange(num_items, dtype=np.float64)
        self._tie = (tie - tie.min()) / (np.ptp(tie) + 1.0) * 1e-3
        self.counts = np.zeros(num_items)
        """Positive feedback per item (refreshed from Redis)."""
        self.pinned: dict[str, MixedPolicy] = {}
        self.rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(4)[3])

    def pinned_versions(self) -> dict[str, int]:
        """``{"version:N": N}`` of the pinned arms."""
        return {a: v for a in self.names if (v := _pinned_version(a)) is not None}

    def assign(self, user_id: int, event_id: str) -> str:
        """The arm of one request."""
        u = bucket(self.salt, str(user_id) if self.sticky else event_id)
        return self.names[min(int(np.searchsorted(self._edges, u, side="right")),
                              len(self.names) - 1)]

    def baseline_slate(self, arm: str, history: Sequence[int], k: int,
                       exclude: Sequence[int]) -> Slate:
        """A slate of the ``random`` or ``popular`` arm."""
        from policy.types import Slate

        allowed = np.ones(self.num_items, dtype=bool)
        allowed[list(exclude)] = False
        n_allowed = int(allowed.sum())
        if arm == "random":
            items = self.rng.choice(np.flatnonzero(allowed), size=k, replace=False)
            props = [1.0 / (n_allowed - j) for j in range(k)]
        else:
            score = self.counts + self._tie
            fresh = allowed.copy()
            fresh[[h for h in history if 0 <= h < self.num_items]] = False
            # Items already seen go last, but still come before nothing.
            order = np.lexsort((-score, ~fresh))
            items = np.asarray([i for i in order if allowed[i]][:k])
            props = [1.0] * k
        return Slate(items=tuple(int(i) for i in items), propensities=tuple(props),
                     sources=(arm,) * k)

    async def refresh(self, client: Any, key: str) -> None:
        """Reload the per-item positive feedback counts from Redis."""
        raw = await client.hgetall(key)
        counts = np.zeros(self.num_items)
        for item, n in raw.items():
            i = int(item)
            if 0 <= i < self.num_items:
                counts[i] = float(n)
        self.counts = counts


async def record_feedback(client: Any, stats_key: str, popularity_key: str, arm: str,
                          item: int, reward: float) -> None:
    """Count one accepted feedback for its arm (and the item's popularity)."""
    await record_feedback_many(client, stats_key, popularity_key, [(arm, item, reward)])


async def record_feedback_many(client: Any, stats_key: str, popularity_key: str,
                               accepted: Sequence[tuple[str, int, float]]) -> None:
    """:func:`record_feedback` for many ``(arm, item, reward)`` in one round trip."""
    async with client.pipeline(transaction=False) as pipe:
        for arm, item, reward in accepted:
            pipe.hincrbyfloat(stats_key, f"{arm}:n", 1.0)
            pipe.hincrbyfloat(stats_key, f"{arm}:sum", reward)
            pipe.hincrbyfloat(stats_key, f"{arm}:sumsq", reward * reward)
            if reward > 0:
                pipe.hincrby(popularity_key, str(item), 1)
        await pipe.execute()


def report(arms: Sequence[tuple[str, float]], raw: Mapping[Any, Any],
           level_z: float = 1.96) -> dict[str, Any]:
    """Per-arm feedback count, mean reward with a normal 95 % interval, and the difference
    to ``mixed`` (Welch) from the Redis counters."""
    stats = {(k.decode() if isinstance(k, bytes) else str(k)): float(v)
             for k, v in raw.items()}
    out: dict[str, Any] = {}
    for arm, share in arms:
        n = stats.get(f"{arm}:n", 0.0)
        s, ss = stats.get(f"{arm}:sum", 0.0), stats.get(f"{arm}:sumsq", 0.0)
        mean = s / n if n else math.nan
        var = (ss - n * mean * mean) / (n - 1) if n > 1 else math.nan
        se = math.sqrt(max(var, 0.0) / n) if n > 1 else math.nan
        out[arm] = {"share": share, "feedback": int(n), "mean_reward": mean, "se": se,
                    "low": mean - level_z * se, "high": mean + level_z * se}
    base = out.get(MIXED)
    for arm, row in out.items():
        if base is None or arm == MIXED:
            continue
        d = row["mean_reward"] - base["mean_reward"]
        se = math.sqrt(row["se"] ** 2 + base["se"] ** 2)
        row["diff_to_mixed"] = {"diff": d, "low": d - level_z * se, "high": d + level_z * se}
    return {arm: {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                  for k, v in row.items()} for arm, row in out.items()}


async def popularity_loop(arms: ABArms, client: Any, key: str, every_s: float) -> None:
    """Refresh the popularity counts until cancelled (Redis errors only delay it)."""
    while True:
        try:
            await arms.refresh(client, key)
        except Exception as exc:  # Redis down: keep the last counts
            logger.debug("A/B popularity refresh failed: %s", exc)
        await asyncio.sleep(every_s)
