"""Shadow (apprentice) mode: the candidate version decides beside the served one.

With ``IALP_SHADOW=true`` a replica also loads the candidate version (published by a
trainer under ``--promotion gate`` or by ``ialp policy submit``). After a micro-batch has
been answered, with probability ``IALP_SHADOW_FRACTION`` (0.25) the candidate computes its
own slates for the same requests on a separate worker thread with its own random
generator, so users receive exactly what they would without shadow mode, and the served
policy's draws are unchanged. Agreement with the served slates is counted (top item,
slate overlap); when the shadow thread is still busy with an earlier batch, the batch is
skipped and counted rather than queued, so shadow work never accumulates behind live
traffic.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from app.metrics import ServiceMetrics
from trainer.transport.publication import (
    PublishedPolicies,
    VersionNotFoundError,
    nonfinite_parameters,
)

if TYPE_CHECKING:
    from policy.mixed import MixedPolicy
    from policy.types import Slate

logger = logging.getLogger(__name__)


@dataclass
class ShadowStats:
    """What the candidate did beside the served policy since it was loaded."""

    decisions: int = 0
    """Requests the candidate decided in shadow."""
    top1_agreements: int = 0
    """Requests where its first item equals the served first item."""
    overlap: float = 0.0
    """Sum over requests of |candidate slate ∩ served slate| / k."""
    skipped: int = 0
    """Sampled requests not shadowed because the shadow thread was busy."""

    def as_dict(self) -> dict[str, Any]:
        """Counts plus the rates (None before any decision)."""
        n = self.decisions
        return {"decisions": n, "skipped": self.skipped,
                "top1_agreement": self.top1_agreements / n if n else None,
                "mean_overlap": self.overlap / n if n else None}


class Shadow:
    """Holds the candidate and runs it on answered batches."""

    def __init__(self, metrics: ServiceMetrics, *, expected_num_items: int,
                 seed: int = 0, fraction: float = 1.0) -> None:
        """``fraction``: share of answered batches shadowed (drawn with a generator of
        its own)."""
        self.metrics = metrics
        self.fraction = fraction
        self.expected_num_items = expected_num_items
        self.candidate: MixedPolicy | None = None
        self.stats = ShadowStats()
        draws, sampling = np.random.SeedSequence(seed).spawn(3)[1:]
        self._rng = np.random.default_rng(draws)
        self._sampling = np.random.default_rng(sampling)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow")
        self._busy = threading.Event()
        self._lock = threading.Lock()
        self._refused: int | None = None

    async def sync(self, policies: PublishedPolicies) -> None:
        """Load the candidate named in Redis (or drop it when none is named)."""
        version = await policies.candidate_version()
        held = self.candidate
        if version is None:
            if held is not None:
                logger.info("shadow: candidate %d withdrawn", held.version)
                self.candidate = None
            return
        if (held is not None and held.version == version) or version == self._refused:
            return
        try:
            policy = await policies.load(version)
        except VersionNotFoundError:
            return
        bad = await asyncio.to_thread(nonfinite_parameters, policy)
        if bad or policy.num_items != self.expected_num_items:
            logger.error("shadow: candidate %d refused (%s)", version,
                         ", ".join(bad[:3]) or f"{policy.num_items} items")
            self._refused = version
            return
        with self._lock:
            self.candidate, self.stats = policy, ShadowStats()
        logger.info("shadow: candidate %d decides beside the served policy", version)

    def submit(self, histories: Sequence[Sequence[int]], ks: Sequence[int],
               excludes: Sequence[Sequence[int]], explores: Sequence[bool],
               user_ids: Sequence[int], served: Sequence[Slate]) -> None:
        """Shadow one answered batch (returns at once; skipped while busy)."""
        candidate = self.candidate
        if candidate is None:
            return
        if self.fraction < 1.0 and self._sampling.random() >= self.fraction:
            return
        if self._busy.is_set():
            with self._lock:
                self.stats.skipped += len(histories)
            self.metrics.shadow_skipped.inc(len(histories))
            return
        self._busy.set()
        self._executor.submit(self._run, candidate, list(histories), list(ks),
                              list(excludes), list(explores), list(user_ids), list(served))

    def _run(self, candidate: MixedPolicy, histories: list[Sequence[int]], ks: list[int],
             excludes: list[Sequence[int]], explores: list[bool], user_ids: list[int],
             served: list[Slate]) -> None:
        try:
            slates = candidate.act_batch(histories, k=ks, explore=explores, exclude=excludes,
                                         user_ids=user_ids, rng=self._rng)
            top1 = sum(int(a.items[0] == b.items[0]) for a, b in zip(slates, served,
                                                                     strict=True))
            overlap = sum(len(set(a.items) & set(b.items)) / max(len(b.items), 1)
                          for a, b in zip(slates, served, strict=True))
            with self._lock:
                if self.candidate is candidate:
                    self.stats.decisions += len(slates)
                    self.stats.top1_agreements += top1
                    self.stats.overlap += overlap
            self.metrics.shadow_decisions.inc(len(slates))
            self.metrics.shadow_top1_agreements.inc(top1)
        except Exception:  # never let the candidate disturb serving
            logger.exception("shadow: candidate forward pass failed")
        finally:
            self._busy.clear()

    def info(self) -> dict[str, Any] | None:
        """``{"version", "shadow": stats}`` of the held candidate, or ``None``."""
        candidate = self.candidate
        if candidate is None:
            return None
        with self._lock:
            return {"version": int(candidate.version), "shadow": self.stats.as_dict()}

    def close(self) -> None:
        """Release the shadow thread (waits for a running batch)."""
        self._executor.shutdown(wait=True)
