"""Start-up and shut-down of the service: :func:`make_lifespan`.

The lifespan owns every resource: the Redis client (or an embedded redis-server), the
served policy and its watcher, the micro-batcher's worker thread and the optional
default-reward sweeper. Nothing is created at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI

from app.ab import ABArms, ArmsError, parse_arms, popularity_loop
from app.decider import Decider, DeciderError
from app.decision_shards import build_decision_store
from app.item_ids import ItemIds
from app.metrics import ServiceMetrics
from app.policy_holder import PolicyHolder, PolicyWatcher
from app.recommender import Recommender
from app.redis_gate import RedisGate
from app.settings import WORKER_SEED_ENV, ServiceSettings
from app.shadow import Shadow
from app.state import ServiceState, redis_errors
from trainer.transport.client import redis_client
from trainer.transport.publication import PublishedPolicies, VersionNotFoundError, start_policy
from trainer.transport.sharded_bus import make_bus

if TYPE_CHECKING:
    from policy.mixed import MixedPolicy

logger = logging.getLogger(__name__)

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


async def build_ab(settings: ServiceSettings, policies: PublishedPolicies,
                   policy: MixedPolicy) -> ABArms | None:
    """The configured A/B arms with their pinned versions loaded, or ``None``. A pinned
    version that is not kept (or has another catalogue) stops start-up."""
    arms = parse_arms(settings.ab_arms)
    if not arms:
        return None
    ab = ABArms(arms, num_items=policy.num_items, salt=settings.ab_salt,
                sticky=settings.ab_bucketing == "user", seed=settings.seed)
    for arm, version in ab.pinned_versions().items():
        try:
            pinned = await policies.load(version)
        except VersionNotFoundError as exc:
            raise ArmsError(f"A/B arm {arm}: {exc} (kept: {await policies.versions()}); "
                            "pin a kept version or raise IALP_KEEP_VERSIONS") from exc
        if pinned.num_items != policy.num_items:
            raise ArmsError(f"A/B arm {arm} has {pinned.num_items} items, the served "
                            f"policy {policy.num_items}")
        ab.pinned[arm] = pinned
    logger.info("A/B arms: %s (bucketing per %s)", ", ".join(
        f"{a} {s:.0%}" for a, s in arms), settings.ab_bucketing)
    return ab


def load_item_ids(settings: ServiceSettings, num_items: int) -> ItemIds:
    """The deployment's id rule: the configured catalogue, else the checkpoint's, else
    integer indices. A catalogue whose size differs from the policy's stops start-up."""
    from policy.catalogue import CATALOGUE_FILE, Catalogue

    path = settings.catalogue
    if path is None and settings.checkpoint is not None:
        candidate = Path(settings.checkpoint) / CATALOGUE_FILE
        path = candidate if candidate.is_file() else None
    if path is None:
        logger.info("no catalogue: items are the integer indices 0..%d", num_items - 1)
        return ItemIds(num_items)
    catalogue = Catalogue.from_file(path)
    logger.info("catalogue %s: %d items (fingerprint %s)", path, len(catalogue),
                catalogue.fingerprint)
    return ItemIds(num_items, catalogue)


async def default_reward_loop(svc: ServiceState) -> None:
    """Learn ``default_reward`` for decisions whose feedback did not come in time."""
    settings = svc.settings
    assert settings.default_reward is not None
    while True:
        await asyncio.sleep(settings.default_reward_sweep_s)
        try:
            for event_id in await svc.store.pop_expired():
                decision = await svc.store.get(event_id)
                if decision is None or not decision.items:
                    continue
                t = decision.transition(decision.items[0], settings.default_reward, False)
                if await svc.bus.publish(t) is not None:
                    svc.metrics.default_rewards.inc()
        except redis_errors() as exc:
            logger.debug("default-reward sweep skipped: %s", exc)


def _sampling_seed(seed: int) -> int:
    """The micro-batcher's seed: ``seed``, mixed with the process id in the workers of
    ``ialp serve --workers N``."""
    if os.environ.get(WORKER_SEED_ENV):
        return (seed * 1_000_003 + os.getpid()) % (2**32)
    return seed


def make_lifespan(settings: ServiceSettings, metrics: ServiceMetrics) -> Lifespan:
    """The application's lifespan: opens every resource, publishes them as
    ``app.state.svc`` (a :class:`ServiceState`) and releases them on shut-down."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from redis.asyncio.retry import Retry as AsyncRetry
        from redis.backoff import NoBackoff

        if settings.torch_threads:
            import torch

            torch.set_num_threads(settings.torch_threads)
        embedded = None
        url: str
        if settings.redis_url is not None:
            url = settings.redis_url
        else:
            from trainer.transport.redis_server import ensure_embedded_redis

            url, embedded = await asyncio.to_thread(
                ensure_embedded_redis, settings.embedded_redis_dir,
                settings.embedded_redis_port)
        # Fail fast: a dead Redis must cost /v1/recommend milliseconds, not retries.
        client = redis_client(
            url, cluster=settings.redis_cluster, socket_timeout=settings.redis_timeout_s,
            # An asyncio client takes the asyncio Retry (redis-py 8 warns about a sync one).
            socket_connect_timeout=settings.redis_timeout_s, retry=AsyncRetry(NoBackoff(), 0))
        shards = settings.shards(url)  # one stream, or N tagged ones (trainer/transport/shards.py)
        keys = shards.keys
        policies = PublishedPolicies(client, keys, keep=settings.keep_versions)
        try:
            policy = await start_policy(
                policies, checkpoint=settings.checkpoint, num_items=settings.num_items,
                max_len=settings.max_len, seed=settings.seed, tolerate=redis_errors())
            item_ids = load_item_ids(settings, policy.num_items)
            await asyncio.to_thread(policy.freeze_for_serving, settings.score_precision)
            ab = await build_ab(settings, policies, policy)
        except BaseException:
            # A catalogue that does not fit (or an A/B arm pinned to a version that is
            # not kept) stops start-up; release what was opened.
            with contextlib.suppress(Exception):
                await client.aclose()
            if embedded is not None:
                await asyncio.to_thread(embedded.stop)
            raise

        def on_swap(p: MixedPolicy) -> None:
            metrics.policy_version.set(p.version)
            metrics.policy_alpha.set(p.alpha)
            metrics.policy_swaps.inc()

        holder = PolicyHolder(policy, on_swap=on_swap)
        store = build_decision_store(settings, url, client)
        shadow = Shadow(metrics, expected_num_items=policy.num_items, seed=settings.seed,
                        fraction=settings.shadow_fraction) if settings.shadow else None
        watcher = PolicyWatcher(holder, policies, poll_s=settings.policy_poll_s,
                                expected_num_items=policy.num_items,
                                on_reject=metrics.policy_rejected.inc, shadow=shadow,
                                precision=settings.score_precision)
        bus = make_bus(client, shards, dedup_ttl_s=settings.dedup_ttl_s)
        gate = RedisGate(settings.redis_cooldown_s)
        decider = None
        if settings.decider and settings.micro_batching and ab is None \
                and policy.has_sampler:
            # The first version is loaded before serving starts; later ones load in the
            # background while the forward-pass thread decides their first batches.
            decider = Decider(threads=settings.torch_threads or 1,
                              timeout_s=settings.decider_timeout_s,
                              nice=settings.decider_nice)
            decider.start()
            try:
                await decider.setup(settings, url, _sampling_seed(settings.seed) + 1)
                await decider.register(policy)
                if decider.key_of(policy) is None:
                    raise DeciderError("the child did not load the policy")
            except DeciderError as exc:  # serve without it: the thread decides
                logger.error("decider process unavailable (%s); deciding on the "
                             "forward-pass thread", exc)
                await decider.stop()
                decider = None
            except BaseException:
                await decider.stop()
                raise
        recommender = Recommender(
            holder, store, gate, metrics, micro_batching=settings.micro_batching,
            max_size=settings.batch_max_size, max_wait_ms=settings.batch_max_wait_ms,
            seed=_sampling_seed(settings.seed), shadow=shadow, ab=ab,
            max_queue_wait_ms=settings.max_queue_wait_ms, decider=decider)
        svc = ServiceState(settings, metrics, client, keys, policies, holder, watcher,
                           store, bus, gate, recommender, item_ids, embedded, shadow, ab,
                           shards=shards)
        app.state.svc = svc
        recommender.start()
        watcher.start()
        # Everything built so far (torch, pydantic, the policy) lives as long as the
        # process: out of the collector's reach, a full collection no longer walks it
        # and stalls every request in flight (p99 of /v1/recommend 150 ms -> 17 ms).
        gc.collect()
        gc.freeze()
        if settings.default_reward is not None:
            svc.tasks.append(asyncio.create_task(default_reward_loop(svc)))
        if ab is not None and "popular" in ab.names:
            svc.tasks.append(asyncio.create_task(popularity_loop(
                ab, client, keys.ab_popularity, settings.ab_popularity_refresh_s)))
        try:
            yield
        finally:
            for task in svc.tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await watcher.stop()
            await recommender.stop()
            if shadow is not None:
                await asyncio.to_thread(shadow.close)
            with contextlib.suppress(Exception):
                await client.aclose()
            if store.blocking_client is not None:
                with contextlib.suppress(Exception):
                    store.blocking_client.close()
            if embedded is not None:
                await asyncio.to_thread(embedded.stop)

    return lifespan
