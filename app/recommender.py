"""Turning /v1/recommend calls into forward passes, optionally micro-batched.

With micro-batching on, concurrent requests wait at most ``max_wait_ms`` for company
and at most ``max_size`` of them share one call of ``MixedPolicy.act_batch``; a lone
request (no other call in flight) does not wait at all, and requests that arrive while
a forward pass runs form the next batch; the
decisions of a batch are then written to Redis in one pipeline. Forward passes run on a
single worker thread so the event loop keeps accepting requests meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from app.ab import CONTROL_ARMS, MIXED, ABArms
from app.decisions import Decision, DecisionStore
from app.metrics import ServiceMetrics
from app.policy_holder import PolicyHolder
from app.redis_gate import RedisGate
from app.shadow import Shadow

if TYPE_CHECKING:
    from policy.mixed import MixedPolicy
    from policy.types import Slate

logger = logging.getLogger(__name__)


@dataclass
class RecommendCall:
    """One request's inputs and, once served, its outputs."""

    event_id: str
    user_id: int
    history: Sequence[int]
    k: int
    exclude: Sequence[int]
    explore: bool
    arm: str = "mixed"
    """A/B arm serving the call (``app.ab``)."""
    future: asyncio.Future[tuple[Slate, MixedPolicy, bool]] = field(
        repr=False, default_factory=lambda: asyncio.get_running_loop().create_future())
    """Resolved when served (create calls inside the event loop)."""


class Recommender:
    """Serves :class:`RecommendCall` s from the held policy."""

    def __init__(self, holder: PolicyHolder, store: DecisionStore | None, gate: RedisGate,
                 metrics: ServiceMetrics, *, micro_batching: bool = True,
                 max_size: int = 64, max_wait_ms: float = 2.0, seed: int = 0,
                 shadow: Shadow | None = None, ab: ABArms | None = None) -> None:
        """``store`` may be ``None`` (decisions are then not recorded); ``shadow`` runs the
        candidate on every answered batch."""
        self.shadow = shadow
        self.ab = ab
        self.holder = holder
        self.store = store
        self.gate = gate
        self.metrics = metrics
        self.micro_batching = micro_batching
        self.max_size = max_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.rng = np.random.default_rng(seed)  # used only on the worker thread
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward")
        self._queue: asyncio.Queue[RecommendCall] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._inflight = 0  # calls inside recommend(); bounds the useful wait
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Start the batching loop (a no-op without micro-batching)."""
        self.loop = asyncio.get_running_loop()
        if self.micro_batching:
            self._task = asyncio.create_task(self._loop(), name="micro-batcher")

    async def stop(self) -> None:
        """Stop the loop, fail waiting calls, release the worker thread."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            call = self._queue.get_nowait()
            if not call.future.done():
                call.future.set_exception(RuntimeError("service shutting down"))
        self.executor.shutdown(wait=True)

    async def recommend(self, call: RecommendCall) -> tuple[Slate, MixedPolicy, bool]:
        """Serve one call: (slate, the policy that decided, whether the decision was
        recorded)."""
        self._inflight += 1
        try:
            if self.micro_batching:
                await self._queue.put(call)
            else:
                await self._serve([call])
            return await call.future
        finally:
            self._inflight -= 1

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            batch = [first]
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_size:
                try:
                    batch.append(self._queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                if self._inflight <= len(batch):
                    break  # nobody else is waiting: waiting would only add latency
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            try:
                await self._serve(batch)
            except asyncio.CancelledError:
                for call in batch:
                    if not call.future.done():
                        call.future.set_exception(RuntimeError("service shutting down"))
                raise

    def _forward(self, policy: MixedPolicy, batch: Sequence[RecommendCall]) -> list[Slate]:
        start = time.perf_counter()
        slates: list[Slate | None] = [None] * len(batch)
        # One forward pass per policy arm; baseline arms need none.
        groups: dict[str, list[int]] = {}
        for i, c in enumerate(batch):
            groups.setdefault(c.arm, []).append(i)
        for arm, rows in groups.items():
            calls = [batch[i] for i in rows]
            if self.ab is not None and arm in CONTROL_ARMS:
                out = [self.ab.baseline_slate(arm, c.history, c.k, c.exclude) for c in calls]
            else:
                acting = policy if arm == MIXED or self.ab is None else self.ab.pinned[arm]
                out = acting.act_batch(
                    [c.history for c in calls], k=[c.k for c in calls],
                    explore=[c.explore for c in calls], exclude=[c.exclude for c in calls],
                    user_ids=[c.user_id for c in calls], rng=self.rng)
            for i, slate in zip(rows, out, strict=True):
                slates[i] = slate
        self.metrics.forward_seconds.observe(time.perf_counter() - start)
        return [s for s in slates if s is not None]

    def deciding_policy(self, policy: MixedPolicy, arm: str) -> MixedPolicy:
        """The policy whose version a decision of ``arm`` records (a pinned arm's own;
        the served one for the mixed and the baseline arms)."""
        if self.ab is not None and arm in self.ab.pinned:
            return self.ab.pinned[arm]
        return policy

    async def _serve(self, batch: list[RecommendCall]) -> None:
        # One read of the reference: the whole batch uses one policy version.
        policy = self.holder.policy
        self.metrics.batch_size.observe(len(batch))
        try:
            slates = await asyncio.get_running_loop().run_in_executor(
                self.executor, self._forward, policy, batch)
        except Exception as exc:
            logger.exception("forward pass failed")
            for call in batch:
                if not call.future.done():
                    call.future.set_exception(exc)
            return
        recorded = await self._record(policy, batch, slates)
        self.metrics.recommendations.inc(len(batch))
        for call, slate in zip(batch, slates, strict=True):
            if self.ab is not None:
                self.metrics.ab_recommendations.labels(arm=call.arm).inc()
            if not call.future.done():
                call.future.set_result((slate, self.deciding_policy(policy, call.arm),
                                        recorded))
        if self.shadow is not None:
            # After the answers: the candidate never delays or changes them.
            self.shadow.submit([c.history for c in batch], [c.k for c in batch],
                               [c.exclude for c in batch], [c.explore for c in batch],
                               [c.user_id for c in batch], slates)

    async def _record(self, policy: MixedPolicy, batch: Sequence[RecommendCall],
                      slates: Sequence[Slate]) -> bool:
        if self.store is None or not self.gate.open():
            self.metrics.decision_store_errors.inc(len(batch))
            return False
        now = time.time()
        decisions = [
            Decision(c.event_id, c.user_id, tuple(c.history), tuple(s.items),
                     tuple(float(p) for p in s.propensities), tuple(s.sources),
                     int(self.deciding_policy(policy, c.arm).version), now, c.arm)
            for c, s in zip(batch, slates, strict=True)
        ]
        try:
            evicted = await self.store.save_many(decisions)
        except Exception as exc:  # Redis down: still serve, but say so
            logger.warning("decision store unavailable: %s", exc)
            self.gate.failed()
            self.metrics.redis_up.set(0)
            self.metrics.decision_store_errors.inc(len(batch))
            return False
        self.gate.succeeded()
        self.metrics.redis_up.set(1)
        if evicted:
            self.metrics.decisions_evicted.inc(evicted)
        return True
