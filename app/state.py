"""What the lifespan creates and the routes share: :class:`ServiceState`.

Also the two small helpers every Redis-touching route needs: which exceptions mean
"Redis is unreachable", and the 503 answer (with ``Retry-After``) that reports it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException

from app.ab import ABArms
from app.decisions import DecisionStore
from app.item_ids import ItemIds
from app.metrics import ServiceMetrics
from app.policy_holder import PolicyHolder, PolicyWatcher
from app.recommender import Recommender
from app.redis_gate import RedisGate
from app.schemas import ErrorResponse
from app.settings import ServiceSettings
from app.shadow import Shadow
from trainer.transport.bus import FeedbackBus
from trainer.transport.keys import RedisKeys
from trainer.transport.publication import PublishedPolicies
from trainer.transport.shards import Shards

if TYPE_CHECKING:
    from trainer.transport.redis_server import EmbeddedRedis

#: OpenAPI declaration of the answer :func:`unavailable` builds.
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorResponse, "description": "Redis unreachable; see Retry-After"}}


@dataclass
class ServiceState:
    """Resources created by the lifespan (``app.state.svc``)."""

    settings: ServiceSettings
    metrics: ServiceMetrics
    client: Any
    keys: RedisKeys
    policies: PublishedPolicies
    holder: PolicyHolder
    watcher: PolicyWatcher
    store: DecisionStore
    bus: FeedbackBus
    gate: RedisGate
    recommender: Recommender
    item_ids: ItemIds
    embedded: EmbeddedRedis | None = None
    shadow: Shadow | None = None
    ab: ABArms | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    shards: Shards = field(default_factory=Shards)
    """Feedback shard layout: which shard an event id belongs to, and new event ids."""


def redis_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean Redis is unreachable (or too slow) right now."""
    # Imported here so that importing the application does not import redis.
    from redis.exceptions import RedisError

    return (RedisError, OSError, asyncio.TimeoutError)


def unavailable(settings: ServiceSettings, what: str) -> HTTPException:
    """A 503 saying ``what`` failed because Redis is unreachable, with ``Retry-After``."""
    return HTTPException(
        status_code=503, detail=f"{what}: Redis is unreachable; retry later",
        headers={"Retry-After": str(settings.retry_after_s)})
