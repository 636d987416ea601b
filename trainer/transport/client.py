"""The one place Redis clients are built: a plain client, or a cluster client.

A URL whose scheme is ``redis+cluster://`` (or ``rediss+cluster://``), or the setting
``IALP_REDIS_CLUSTER=true``, names a Redis Cluster: the client is redis-py's
``RedisCluster``, which discovers the nodes from the one given and routes each command
by its key's slot. Everything else gets the plain client.
"""

from __future__ import annotations

from typing import Any

_CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster by its scheme."""
    return url.lower().startswith(_CLUSTER_SCHEMES)


def wants_cluster(url: str, cluster: bool = False) -> bool:
    """Whether a client for ``url`` (with the ``redis_cluster`` setting) is a cluster one."""
    return cluster or is_cluster_url(url)


def _plain_url(url: str) -> str:
    """``redis+cluster://h:p`` → ``redis://h:p`` (what redis-py parses)."""
    if is_cluster_url(url):
        scheme, rest = url.split("://", 1)
        return f"{scheme.split('+', 1)[0]}://{rest}"
    return url


def redis_client(url: str, *, cluster: bool = False, **options: Any) -> Any:
    """An asyncio client for ``url``: ``redis.asyncio.RedisCluster`` when the URL or
    ``cluster`` says so, else ``redis.asyncio.Redis``. ``options`` go to ``from_url``
    (timeouts, retry)."""
    if wants_cluster(url, cluster):
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url(_plain_url(url), **options)
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(url, **options)


def sync_redis_client(url: str, *, cluster: bool = False, **options: Any) -> Any:
    """The blocking twin of :func:`redis_client` (command-line tools, tests, benchmarks)."""
    if wants_cluster(url, cluster):
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(_plain_url(url), **options)
    import redis

    return redis.Redis.from_url(url, **options)
