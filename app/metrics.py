"""Prometheus metrics of one application instance (own registry, so several apps can
live in one process, e.g. in tests)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0)


class ServiceMetrics:
    """All service metrics, registered in :attr:`registry`."""

    def __init__(self) -> None:
        """Create the collectors."""
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram(
            "ialp_http_request_duration_seconds", "HTTP request latency by route.",
            ["route", "method", "status"], registry=r, buckets=_LATENCY_BUCKETS)
        self.batch_size = Histogram(
            "ialp_recommend_batch_size", "Requests per forward pass.", registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.forward_seconds = Histogram(
            "ialp_recommend_forward_seconds", "Time of one batched forward pass.",
            registry=r, buckets=_LATENCY_BUCKETS)
        self.decided_in = Counter(
            "ialp_recommend_batches_total", "Micro-batches decided, by where: 'decider' "
            "(the child process, app.decider) or 'thread' (the forward-pass thread).",
            ["where"], registry=r)
        self.recommendations = Counter(
            "ialp_recommendations_total", "Slates served.", registry=r)
        self.decision_store_errors = Counter(
            "ialp_decision_store_errors_total",
            "Decisions not recorded because Redis was unreachable.", registry=r)
        self.decisions_evicted = Counter(
            "ialp_decisions_evicted_total",
            "Oldest decisions dropped to stay within IALP_DECISION_CAP.", registry=r)
        self.feedback = Counter(
            "ialp_feedback_total", "Feedback calls by outcome.", ["outcome"], registry=r)
        for outcome in ("accepted", "duplicate", "rejected", "unavailable"):
            self.feedback.labels(outcome=outcome)
        self.default_rewards = Counter(
            "ialp_default_rewards_total",
            "Decisions learned with the default reward (feedback never came).", registry=r)
        self.policy_version = Gauge(
            "ialp_policy_version", "Version of the served policy.", registry=r)
        self.policy_alpha = Gauge("ialp_policy_alpha", "α of the served policy.", registry=r)
        self.policy_swaps = Counter(
            "ialp_policy_swaps_total", "Hot swaps of the served policy.", registry=r)
        self.overloaded = Counter(
            "ialp_overloaded_total", "Requests refused with 503 because the replica was at "
            "its in-flight or queue-wait bound.", ["reason"], registry=r)
        for reason in ("in_flight", "queue_wait"):
            self.overloaded.labels(reason=reason)
        self.rate_limited = Counter(
            "ialp_rate_limited_total", "Requests refused with 429 (rate limit).", registry=r)
        self.policy_rejected = Counter(
            "ialp_policy_rejected_total", "Published versions this replica refused to "
            "serve (non-finite weights, wrong catalogue).", registry=r)
        self.redis_up = Gauge(
            "ialp_redis_up", "1 when the last Redis call succeeded.", registry=r)
        self.ab_recommendations = Counter(
            "ialp_ab_recommendations_total", "Slates served per A/B arm.", ["arm"],
            registry=r)
        self.ab_reward = Summary(
            "ialp_ab_feedback_reward", "Accepted feedback rewards per A/B arm (count and "
            "sum).", ["arm"], registry=r)
        self.shadow_decisions = Counter(
            "ialp_shadow_decisions_total", "Requests the candidate decided in shadow "
            "mode.", registry=r)
        self.shadow_top1_agreements = Counter(
            "ialp_shadow_top1_agreements_total", "Shadow decisions whose first item equals "
            "the served first item.", registry=r)
        self.shadow_skipped = Counter(
            "ialp_shadow_skipped_total", "Requests not shadowed because the shadow thread "
            "was busy.", registry=r)


class LatencyMiddleware:
    """Pure ASGI middleware observing request latency per route template."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        """Wrap ``app``."""
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Time one request."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            # Route templates keep label cardinality bounded; unknown paths share one label.
            name = getattr(route, "path", None) or "unmatched"
            self.metrics.latency.labels(
                route=name, method=scope.get("method", ""), status=str(status[0])
            ).observe(time.perf_counter() - start)
