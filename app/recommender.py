"""Turning /v1/recommend calls into forward passes, optionally micro-batched.

With micro-batching on, at most ``max_size`` concurrent requests share one call of
``MixedPolicy.act_batch``: requests that arrive while a forward pass runs form the next
batch, and the first request of a batch waits (at most ``max_wait_ms``) for as many
requests as the largest of the recent batches held, so a lone client never waits. The
decisions of a batch are written to Redis in one round trip.

Where a batch is decided: k = 1 calls from θ alone go to the decider process
(:mod:`app.decider`, on by default with more than one core), which draws, runs the
frozen sampler and writes the decisions itself; up to ``DECIDER_BATCHES`` batches are
then in flight (16 clients split in two halves), so the event loop parses one batch's
requests while another is decided. Everything else (k > 1, β mixing,
A/B arms, a decider that is not running or has not loaded the served version yet) runs
on a single forward-pass thread, one batch at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from app.ab import CONTROL_ARMS, MIXED, ABArms
from app.decider import Decider, DeciderError, DeciderTimeoutError
from app.decisions import Decision, DecisionStore
from app.metrics import ServiceMetrics
from app.policy_holder import PolicyHolder
from app.redis_gate import RedisGate
from app.shadow import Shadow

if TYPE_CHECKING:
    from policy.mixed import ActPlan, FastInputs, MixedPolicy
    from policy.types import Slate

logger = logging.getLogger(__name__)


def _plan(policy: MixedPolicy, calls: Sequence[RecommendCall]) -> ActPlan:
    """:meth:`MixedPolicy.plan` of a batch of calls."""
    return policy.plan([c.history for c in calls], k=[c.k for c in calls],
                       explore=[c.explore for c in calls],
                       exclude=[c.exclude for c in calls],
                       user_ids=[c.user_id for c in calls])


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


DECIDER_BATCHES = 4
"""Most micro-batches in flight with a decider process. Few clients fill two (16
closed-loop clients: two halves of 8); under overload four batches of
:data:`DECIDER_BATCH_CAP` keep the child and the event loop both busy (4,606 items, twice
the capacity, 128 calls in flight: goodput 0.96 × capacity against 0.61 with whole
batches of 64 one at a time; docs/performance.md, "Overload")."""

DECIDER_BATCH_CAP = 16
"""Largest micro-batch sent to a decider process (a batch is at most half the recent
clients, so 16 closed-loop clients make halves of 8)."""


class OverloadedError(RuntimeError):
    """The call waited longer than the queue-wait bound: answer 503, not late."""


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
    queued_at: float = field(default_factory=time.monotonic)
    """When the call was created (the queue-wait bound counts from here)."""
    future: asyncio.Future[tuple[Slate, MixedPolicy, bool]] = field(
        repr=False, default_factory=lambda: asyncio.get_running_loop().create_future())
    """Resolved when served (create calls inside the event loop)."""


class Recommender:
    """Serves :class:`RecommendCall` s from the held policy."""

    def __init__(self, holder: PolicyHolder, store: DecisionStore | None, gate: RedisGate,
                 metrics: ServiceMetrics, *, micro_batching: bool = True,
                 max_size: int = 64, max_wait_ms: float = 2.0, seed: int = 0,
                 shadow: Shadow | None = None, ab: ABArms | None = None,
                 max_queue_wait_ms: float | None = None,
                 decider: Decider | None = None) -> None:
        """``store`` may be ``None`` (decisions are then not recorded); ``shadow`` runs the
        candidate on every answered batch; ``decider`` (a started :class:`Decider`)
        decides k = 1 batches in its own process, up to ``DECIDER_BATCHES`` in flight."""
        self.decider = decider
        # Batches in flight: with a decider the event loop parses the next batch while
        # one is decided (no interpreter lock to wait for); with the forward-pass thread
        # a second batch would only make the thread wait for the lock (see app.decider).
        # At every catalogue size: on 100,000 items (bfloat16 scores) 16 closed-loop
        # clients got 2,212–2,452 req/s in halves against 1,818 in whole batches.
        self._slot_count = DECIDER_BATCHES if decider is not None else 1
        self._slots = asyncio.Semaphore(self._slot_count)
        self._in_flight = 0  # calls in the batches being served
        self._tasks: set[asyncio.Task[None]] = set()
        self.shadow = shadow
        self.ab = ab
        self.holder = holder
        self.store = store
        self.gate = gate
        self.metrics = metrics
        self.micro_batching = micro_batching
        self.max_size = max_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue_wait_s = (None if max_queue_wait_ms is None
                                 else max_queue_wait_ms / 1000.0)
        # Draws happen on the event-loop thread only (plans, uniforms, general-path draws).
        self.rng = np.random.default_rng(seed)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward")
        self._pending: list[RecommendCall] = []  # waiting for the next batch
        self._wakeup: asyncio.Future[None] | None = None  # set while the batcher waits
        self._wake_at = 1  # pending calls that end the wait
        self._recent_sizes: deque[int] = deque(maxlen=32)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the batching loop (a no-op without micro-batching)."""
        if self.micro_batching:
            self._task = asyncio.create_task(self._loop(), name="micro-batcher")

    async def stop(self) -> None:
        """Stop the loop, fail waiting calls, release the worker thread and the decider."""
        for task in [*self._tasks, *([self._task] if self._task is not None else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        if self.decider is not None:
            await self.decider.stop()
        pending, self._pending = self._pending, []
        for call in pending:
            if not call.future.done():
                call.future.set_exception(RuntimeError("service shutting down"))
        self.executor.shutdown(wait=True)

    async def recommend(self, call: RecommendCall) -> tuple[Slate, MixedPolicy, bool]:
        """Serve one call: (slate, the policy that decided, whether the decision was
        recorded)."""
        if not self.micro_batching:
            await self._serve([call])
        else:
            self._pending.append(call)
            wakeup = self._wakeup
            if wakeup is not None and not wakeup.done() and \
                    len(self._pending) >= self._wake_at:
                wakeup.set_result(None)
        return await call.future

    async def _wait(self, count: int, timeout_s: float | None) -> None:
        """Until ``count`` calls are pending (or ``timeout_s`` passed)."""
        loop = asyncio.get_running_loop()
        self._wake_at = count
        self._wakeup = loop.create_future()
        timer = None if timeout_s is None else loop.call_later(
            timeout_s, _resolve, self._wakeup)
        try:
            await self._wakeup
        finally:
            self._wakeup = None
            if timer is not None:
                timer.cancel()

    async def _loop(self) -> None:
        while True:
            if not self._pending:
                await self._wait(1, None)
            await self._slots.acquire()
            # Company: as many calls as the largest recent count of clients (a batch plus
            # the calls then in flight or pending), less those in flight now, waiting at
            # most max_wait_s. A lone client never waits; sixteen closed-loop clients
            # share one forward pass and one Redis round trip (or two overlapping ones).
            clients = max(self._recent_sizes, default=1)
            # With a decider: batches of at most half the clients (one is decided while
            # the event loop parses the other's requests), at most DECIDER_BATCH_CAP (under
            # overload several small batches keep both busy). The thread decides whole
            # batches, one at a time (a second one would only wait for the lock).
            share = (min(self.max_size, -(-clients // 2), DECIDER_BATCH_CAP)  # ceil
                     if self._slot_count > 1 else min(self.max_size, clients))
            target = max(1, min(share, clients - self._in_flight))
            if len(self._pending) < target and self.max_wait_s > 0:
                await self._wait(target, self.max_wait_s)
            batch = self._pending[:share]
            del self._pending[:share]
            batch = self._drop_stale(batch)
            if not batch:
                self._slots.release()
                continue
            self._recent_sizes.append(len(batch) + self._in_flight + len(self._pending))
            task = asyncio.create_task(self._serve_batch(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve_batch(self, batch: list[RecommendCall]) -> None:
        self._in_flight += len(batch)
        try:
            await self._serve(batch)
        except asyncio.CancelledError:
            for call in batch:
                if not call.future.done():
                    call.future.set_exception(RuntimeError("service shutting down"))
            raise
        finally:
            self._in_flight -= len(batch)
            self._slots.release()

    def _drop_stale(self, batch: list[RecommendCall]) -> list[RecommendCall]:
        """Refuse (:class:`OverloadedError`) the calls that waited past the queue-wait bound:
        under overload the queue then stays short, and those served keep their latency."""
        if self.max_queue_wait_s is None:
            return batch
        oldest = time.monotonic() - self.max_queue_wait_s
        if batch[0].queued_at >= oldest:  # calls queue in arrival order
            return batch
        fresh = []
        for call in batch:
            if call.queued_at < oldest:
                self.metrics.overloaded.labels(reason="queue_wait").inc()
                if not call.future.done():
                    call.future.set_exception(OverloadedError("waited too long for the policy"))
            else:
                fresh.append(call)
        return fresh

    async def _forward(self, policy: MixedPolicy,
                       batch: Sequence[RecommendCall]) -> list[Slate]:
        start = time.perf_counter()
        loop = asyncio.get_running_loop()
        slates: list[Slate | None] = [None] * len(batch)
        # One forward pass per policy arm; baseline arms need none.
        groups: dict[str, list[int]] = {}
        for i, c in enumerate(batch):
            groups.setdefault(c.arm, []).append(i)
        for arm, rows in groups.items():
            calls = [batch[i] for i in rows]
            out: list[Slate] | None = None
            if self.ab is not None and arm in CONTROL_ARMS:
                out = [self.ab.baseline_slate(arm, c.history, c.k, c.exclude) for c in calls]
            else:
                acting = policy if arm == MIXED or self.ab is None else self.ab.pinned[arm]
                plan = _plan(acting, calls)
                # Only frozen graphs run on the worker thread (without the interpreter
                # lock); planning and drawing are short array work that would otherwise
                # wait for the lock the event loop holds. k = 1 from θ alone is decided
                # whole inside one graph (no [B, I] array ever reaches Python).
                fast = acting.fast_inputs(plan, self.rng)
                if fast is not None:
                    items, props, ok = await loop.run_in_executor(
                        self.executor, acting.sample_frozen, plan, fast)
                    if ok:
                        out = acting.fast_slates(items, props)
                if out is None:
                    p_theta, p_beta = await loop.run_in_executor(
                        self.executor, acting.component_probs, plan.padded, plan.users)
                    out = acting.draw(plan, p_theta, p_beta, rng=self.rng)
            assert out is not None
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

    async def _decide_elsewhere(self, policy: MixedPolicy, batch: Sequence[RecommendCall],
                                ) -> tuple[list[Slate], bool] | None:
        """The batch's k = 1 decisions from the decider process and their Redis write
        (asyncio client: the event loop only encodes the call); ``None`` when the
        decider cannot decide it (policy not loaded there yet, k > 1, a failure): the
        forward-pass thread then does."""
        assert self.decider is not None
        if any(c.k != 1 for c in batch):  # the child decides k = 1 only: no round trip
            return None
        key = self.decider.key_of(policy)
        if key is None:
            return None
        record = self.store is not None and self.gate.open()
        calls = [(c.event_id, c.user_id, c.history, c.k, c.exclude, c.explore) for c in batch]
        start = time.perf_counter()
        try:
            out = await self.decider.decide(key, calls, record)
        except DeciderTimeoutError as exc:  # refused, not decided twice (see DeciderTimeoutError)
            raise OverloadedError(f"the decider process did not answer ({exc})") from exc
        except DeciderError as exc:
            logger.warning("decider failed a batch (%s); deciding on the thread", exc)
            return None
        if out is None:
            return None
        items, props, (write, detail) = out
        slates = policy.fast_slates(items, props)
        self.metrics.forward_seconds.observe(time.perf_counter() - start)
        if write == "saved":
            self._store_succeeded(int(detail))
            return slates, True
        if write == "failed":
            self._store_failed(RuntimeError(detail), len(batch))
        else:  # no store, or the gate is closed: not recorded, as on the other paths
            self.metrics.decision_store_errors.inc(len(batch))
        return slates, False

    def _decide_fast(self, policy: MixedPolicy, batch: Sequence[RecommendCall],
                     plan: ActPlan, fast: FastInputs) -> tuple[list[Slate], bool] | None:
        """Worker thread: the one-graph decisions and their Redis write; ``None`` when
        the graph could not decide every row (the general path then runs)."""
        start = time.perf_counter()
        items, props, ok = policy.sample_frozen(plan, fast)
        if not ok:
            return None
        slates = policy.fast_slates(items, props)
        self.metrics.forward_seconds.observe(time.perf_counter() - start)
        return slates, self._record_blocking(policy, batch, slates)

    def _record_blocking(self, policy: MixedPolicy, batch: Sequence[RecommendCall],
                         slates: Sequence[Slate]) -> bool:
        if not self.gate.open():
            self.metrics.decision_store_errors.inc(len(batch))
            return False
        assert self.store is not None
        try:
            evicted = self.store.save_many_blocking(self._decisions(policy, batch, slates))
        except Exception as exc:  # Redis down: still serve, but say so
            self._store_failed(exc, len(batch))
            return False
        self._store_succeeded(evicted)
        return True

    async def _serve(self, batch: list[RecommendCall]) -> None:
        # One read of the reference: the whole batch uses one policy version.
        policy = self.holder.policy
        self.metrics.batch_size.observe(len(batch))
        loop = asyncio.get_running_loop()
        try:
            decided = None
            where = "thread"
            if self.decider is not None and self.ab is None:
                decided = await self._decide_elsewhere(policy, batch)
                where = "thread" if decided is None else "decider"
            if decided is None and self.ab is None and self.store is not None and \
                    self.store.blocking_client is not None:
                plan = _plan(policy, batch)
                fast = policy.fast_inputs(plan, self.rng)
                if fast is not None:
                    # One trip to the worker thread: graph, slates and the Redis write.
                    decided = await loop.run_in_executor(
                        self.executor, self._decide_fast, policy, batch, plan, fast)
            self.metrics.decided_in.labels(where=where).inc()
            if decided is None:
                slates = await self._forward(policy, batch)
        except Exception as exc:
            logger.exception("forward pass failed")
            for call in batch:
                if not call.future.done():
                    call.future.set_exception(exc)
            return
        if decided is not None:
            slates, recorded = decided
        elif self.store is not None and self.store.blocking_client is not None:
            # The Redis round trip on the worker thread: the event loop keeps parsing.
            recorded = await asyncio.get_running_loop().run_in_executor(
                self.executor, self._record_blocking, policy, batch, slates)
        else:
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

    def _decisions(self, policy: MixedPolicy, batch: Sequence[RecommendCall],
                   slates: Sequence[Slate]) -> list[Decision]:
        now = time.time()
        return [
            Decision(c.event_id, c.user_id, tuple(c.history), tuple(s.items),
                     tuple(float(p) for p in s.propensities), tuple(s.sources),
                     int(self.deciding_policy(policy, c.arm).version), now, c.arm)
            for c, s in zip(batch, slates, strict=True)
        ]

    def _store_failed(self, exc: Exception, n: int) -> None:
        logger.warning("decision store unavailable: %s", exc)
        self.gate.failed()
        self.metrics.redis_up.set(0)
        self.metrics.decision_store_errors.inc(n)

    def _store_succeeded(self, evicted: int) -> None:
        self.gate.succeeded()
        self.metrics.redis_up.set(1)
        if evicted:
            self.metrics.decisions_evicted.inc(evicted)

    async def _record(self, policy: MixedPolicy, batch: Sequence[RecommendCall],
                      slates: Sequence[Slate]) -> bool:
        if self.store is None or not self.gate.open():
            self.metrics.decision_store_errors.inc(len(batch))
            return False
        try:
            evicted = await self.store.save_many(self._decisions(policy, batch, slates))
        except Exception as exc:  # Redis down: still serve, but say so
            self._store_failed(exc, len(batch))
            return False
        self._store_succeeded(evicted)
        return True
