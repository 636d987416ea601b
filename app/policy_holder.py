"""The served policy: one reference, swapped atomically, kept fresh from Redis.

A request (or a micro-batch) reads :attr:`PolicyHolder.policy` once and uses that object
for its whole forward pass, so it sees the old or the new policy, never a mix: a swap
replaces the reference and never mutates a policy in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from trainer.transport.publication import (
    PublishedPolicies,
    VersionNotFoundError,
    nonfinite_parameters,
)

if TYPE_CHECKING:
    from app.shadow import Shadow
    from policy.mixed import MixedPolicy

logger = logging.getLogger(__name__)


class PolicyHolder:
    """Holds the served :class:`~policy.mixed.MixedPolicy`."""

    def __init__(self, policy: MixedPolicy,
                 on_swap: Callable[[MixedPolicy], None] | None = None) -> None:
        """``on_swap`` is called after every swap (metrics)."""
        self._policy = policy
        self._on_swap = on_swap
        if on_swap is not None:
            on_swap(policy)

    @property
    def policy(self) -> MixedPolicy:
        """The current policy; read it once per forward pass."""
        return self._policy

    def swap(self, policy: MixedPolicy) -> MixedPolicy:
        """Serve ``policy`` from now on; returns the previous one."""
        old, self._policy = self._policy, policy
        if self._on_swap is not None:
            self._on_swap(policy)
        logger.info("serving policy version %d (α=%.3f)", policy.version, policy.alpha)
        return old


class PolicyWatcher:
    """Follows ``current`` in Redis: pub/sub notifications plus a periodic version check."""

    def __init__(self, holder: PolicyHolder, policies: PublishedPolicies, *,
                 poll_s: float = 0.5, expected_num_items: int | None = None,
                 on_reject: Callable[[], None] | None = None,
                 shadow: Shadow | None = None, precision: str = "float32") -> None:
        """Swap ``holder`` whenever Redis names another version; ``on_reject`` is called
        when a version is refused (metrics); ``shadow`` follows the candidate version;
        ``precision``: that of the served graphs (``MixedPolicy.freeze_for_serving``)."""
        self.precision = precision
        self.shadow = shadow
        self.on_reject = on_reject
        self._refused: int | None = None  # last refused version (log it once)
        self.holder = holder
        self.policies = policies
        self.poll_s = poll_s
        self.expected_num_items = expected_num_items
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def sync(self) -> bool:
        """Load the current version if it differs from the served one; True on swap.
        With shadow mode, also load (or drop) the candidate."""
        async with self._lock:
            if self.shadow is not None:
                await self.shadow.sync(self.policies)
            version = await self.policies.current_version()
            if version is None or version == self.holder.policy.version or \
                    version == self._refused:
                return False
            try:
                policy = await self.policies.load(version)
            except VersionNotFoundError:
                logger.warning("current version %d has no blob; keeping %d", version,
                               self.holder.policy.version)
                return False
            if self.expected_num_items is not None and \
                    policy.num_items != self.expected_num_items:
                logger.error("version %d has %d items, catalogue has %d; not swapping",
                             version, policy.num_items, self.expected_num_items)
                return self._refuse(version)
            bad = await asyncio.to_thread(nonfinite_parameters, policy)
            if bad:
                logger.error("version %d has non-finite values (%s); keeping version %d",
                             version, ", ".join(bad[:5]), self.holder.policy.version)
                return self._refuse(version)
            # Off the event loop, before the swap: the first request on the new version
            # does not pay for tracing.
            await asyncio.to_thread(policy.freeze_for_serving, self.precision)
            self.holder.swap(policy)
            return True

    def _refuse(self, version: int) -> bool:
        self._refused = version
        if self.on_reject is not None:
            self.on_reject()
        return False

    async def run(self) -> None:
        """Loop until :meth:`stop`: wait for a notification (or the poll interval), sync."""
        client = self.policies.client
        channel = self.policies.keys.policy_channel
        while not self._stopping.is_set():
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                message: Any = None
                last_sync = -math.inf
                while not self._stopping.is_set():
                    now = time.monotonic()
                    if message is not None or now - last_sync >= self.poll_s:
                        last_sync = now
                        with contextlib.suppress(Exception):
                            await self.sync()
                    # Short waits keep shutdown prompt whatever the poll interval.
                    message = await pubsub.get_message(timeout=min(self.poll_s, 0.25))
            except Exception as exc:  # Redis down: keep serving, retry later
                logger.debug("policy watcher: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.poll_s)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def start(self) -> None:
        """Run :meth:`run` as a background task."""
        self._stopping.clear()
        self._task = asyncio.create_task(self.run(), name="policy-watcher")

    async def stop(self) -> None:
        """Stop the background task.

        The loop is asked to finish rather than cancelled: cancelling a pub/sub read
        that is timing out at the same moment can be swallowed and hang shutdown.
        """
        if self._task is None:
            return
        self._stopping.set()
        done, _ = await asyncio.wait({self._task}, timeout=5.0)
        if not done:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=5.0)
        self._task = None
