"""The FastAPI application: ``create_app()`` builds settings, middlewares and routes.

Resources (Redis, the served policy, the micro-batcher) belong to the lifespan in
:mod:`app.lifespan`; the routes live in :mod:`app.routes` and reach them through the
dependencies in :mod:`app.deps`. Nothing is created at import time.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.types import ASGIApp

from app.deps import auth_warnings
from app.lifespan import make_lifespan
from app.limits import RateLimitMiddleware, RequestLimitMiddleware, TokenBuckets
from app.metrics import LatencyMiddleware, ServiceMetrics
from app.overload import OverloadGuard
from app.routes import ROUTERS
from app.routes.operations import noop_router
from app.settings import ServiceSettings
from app.validation import on_invalid_request

__all__ = ["create_app"]


class _GuardedApp(FastAPI):
    """FastAPI with :class:`OverloadGuard` outside its whole middleware stack (even the
    error handler), so a refused request costs the least the framework allows; the
    guard is :attr:`overload_guard`, where the HTTP protocol finds it
    (:mod:`app.fast_refusal`)."""

    def __init__(self, guard: dict[str, Any], **kwargs: Any) -> None:
        """``guard``: :class:`OverloadGuard`'s keyword arguments; the rest FastAPI's."""
        super().__init__(**kwargs)
        self.overload_guard = OverloadGuard(None, **guard)

    def build_middleware_stack(self) -> ASGIApp:
        self.overload_guard.app = super().build_middleware_stack()
        return self.overload_guard


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """Build the application (settings from the environment unless given)."""
    settings = settings or ServiceSettings()
    metrics = ServiceMetrics()
    app = _GuardedApp(
        {"max_in_flight": settings.in_flight_bound, "retry_after_s": settings.retry_after_s,
         "on_refused": metrics.overloaded.labels(reason="in_flight").inc},
        title="iALP recommendation service",
        version="1.0",
        description="Serves slates from the mixed policy π̃ = (1-α)·πθ + α·πβ, records "
        "each decision, and sends feedback through Redis to the online trainer, whose "
        "new versions are hot-swapped without a restart.",
        lifespan=make_lifespan(settings, metrics),
    )
    auth_warnings(settings)
    # Added innermost first: latency wraps everything, the body limit sits next to routes.
    app.add_middleware(RequestLimitMiddleware, max_bytes=settings.max_body_bytes,
                       max_header_bytes=settings.max_header_bytes)
    if settings.rate_limit_per_s > 0 or settings.rate_limit_key_per_s > 0:
        app.add_middleware(
            RateLimitMiddleware,
            anonymous=TokenBuckets(settings.rate_limit_per_s, settings.rate_limit_burst,
                                   settings.rate_limit_clients)
            if settings.rate_limit_per_s > 0 else None,
            keyed=TokenBuckets(settings.rate_limit_key_per_s, settings.rate_limit_key_burst,
                               settings.rate_limit_clients)
            if settings.rate_limit_key_per_s > 0 else None,
            on_limited=metrics.rate_limited.inc,
            known_keys=[k.get_secret_value().encode()
                        for k in (settings.api_key, settings.admin_api_key) if k is not None])
    app.add_middleware(LatencyMiddleware, metrics=metrics)
    # Set here, not in the lifespan: /metrics and the 422 handler work before start-up.
    app.state.metrics = metrics
    app.state.settings = settings
    app.exception_handler(RequestValidationError)(on_invalid_request)
    for router in ROUTERS:
        app.include_router(router)
    if settings.enable_noop:
        app.include_router(noop_router)
    return app
