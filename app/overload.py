"""Graceful overload: bounded work in flight, refusals that cost almost nothing.

:class:`OverloadGuard` wraps the whole application (outside FastAPI, so a refused request
never reaches routing, body parsing or validation). It counts the requests on the
service's working routes that are in flight; beyond ``max_in_flight`` a new one is
answered ``503`` with ``Retry-After`` at once. Accepted requests keep their latency
because the queue in front of the policy never grows beyond what it serves within the
wait bound, and goodput stays near the peak because a refusal costs a few per cent of a
served request. The micro-batcher adds the second bound: a call that waited longer than
``max_queue_wait_ms`` for its forward pass is refused the same way instead of being
served late (:class:`app.recommender.OverloadedError`).

Health, metrics and the operator routes are never refused, so an overloaded replica can
still be watched and drained.
"""

from __future__ import annotations

from collections.abc import Callable

from app.limits import ASGIApp, Receive, Scope, Send

GUARDED_PREFIX = "/v1/"
"""Routes whose requests count and can be refused (``/healthz``, ``/metrics`` never)."""

UNGUARDED = ("/v1/policy", "/v1/catalogue", "/v1/ab")
"""Operator and read-only routes under ``/v1/`` that are never refused."""


class OverloadGuard:
    """503 + Retry-After beyond ``max_in_flight`` requests on the working routes."""

    def __init__(self, app: ASGIApp, *, max_in_flight: int, retry_after_s: int,
                 on_refused: Callable[[], None] | None = None) -> None:
        """Wrap ``app``; ``on_refused`` is called once per refused request (metrics)."""
        self.app = app
        self.max_in_flight = int(max_in_flight)
        self.on_refused = on_refused
        self.in_flight = 0
        body = (b'{"detail":"overloaded: more than %d requests in flight; retry later"}'
                % self.max_in_flight)
        # Built once: a refusal is two sends of constant messages.
        self._start = {"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(int(retry_after_s)).encode())]}
        self._body = {"type": "http.response.body", "body": body}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse at once, or count the request while the application serves it."""
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(GUARDED_PREFIX) or \
                path.startswith(UNGUARDED):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            if self.on_refused is not None:
                self.on_refused()
            await send(self._start)
            await send(self._body)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
