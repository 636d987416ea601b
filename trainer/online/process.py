"""``ialp trainer``'s process: connect to Redis, set up, run until a signal."""

from __future__ import annotations

import asyncio
import logging

from trainer.online.loop import TrainerService
from trainer.online.metrics import TrainerMetrics
from trainer.online.settings import TrainerSettings
from trainer.transport.publication import PublishedPolicies

logger = logging.getLogger(__name__)


async def run_trainer(settings: TrainerSettings) -> None:
    """Connect, set up and run a trainer until SIGTERM/SIGINT."""
    import signal

    import torch

    from trainer.transport.client import redis_client
    from trainer.transport.sharded_bus import make_bus

    torch.set_num_threads(settings.torch_threads)
    embedded = None
    url = settings.redis_url
    if url is None:
        from trainer.transport.redis_server import ensure_embedded_redis

        url, embedded = ensure_embedded_redis(settings.embedded_redis_dir,
                                              settings.embedded_redis_port)
    # A reply that never comes must fail the command (and trigger a resync), not hang it.
    timeout = settings.redis_timeout_s + settings.block_ms / 1000.0
    client = redis_client(url, cluster=settings.redis_cluster, socket_timeout=timeout,
                          socket_connect_timeout=settings.redis_timeout_s)
    shards = settings.shards(url)
    keys = shards.keys
    # One stream, or one per shard (each with its consumer group), behind one interface.
    bus = make_bus(client, shards, group=settings.group, consumer=settings.consumer,
                   dedup_ttl_s=settings.dedup_ttl_s,
                   claim_idle_ms=settings.claim_idle_ms,
                   claim_every_s=settings.claim_every_s,
                   max_deliveries=settings.max_deliveries)
    policies = PublishedPolicies(client, keys, keep=settings.keep_versions)
    metrics = TrainerMetrics()
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr="127.0.0.1", registry=metrics.registry)
    service = TrainerService(settings, bus, policies, stats_client=client, metrics=metrics)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.stop)
    try:
        await bus.ensure_group()
        await service.setup()
        logger.info("trainer %s ready (version %d, scheme %s, method %s)", settings.consumer,
                    service.state.version, settings.scheme, settings.method)
        await service.run()
    finally:
        await client.aclose()
        if embedded is not None:
            embedded.stop()
