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

Under ``ialp serve`` most refusals never reach this class's ``__call__``: the HTTP
protocol (:mod:`app.fast_refusal`) reads the same counter and writes the same answer
(:meth:`OverloadGuard.raw_refusal`) as soon as a request's head is parsed.
"""

from __future__ import annotations

from collections.abc import Callable

from app.limits import ASGIApp, Receive, Scope, Send

GUARDED_PREFIX = "/v1/"
"""Routes whose requests count and can be refused (``/healthz``, ``/metrics`` never)."""

UNGUARDED = ("/v1/policy", "/v1/catalogue", "/v1/ab")
"""Operator and read-only routes under ``/v1/`` that are never refused."""

ADMITTED = "ialp.admitted"
"""Scope key set by the HTTP protocol on a request it counted in :attr:`OverloadGuard.admitted`."""

_GUARDED_RAW = GUARDED_PREFIX.encode()
_UNGUARDED_RAW = tuple(p.encode() for p in UNGUARDED)


class OverloadGuard:
    """503 + Retry-After beyond ``max_in_flight`` requests on the working routes."""

    def __init__(self, app: ASGIApp | None, *, max_in_flight: int, retry_after_s: int,
                 on_refused: Callable[[], None] | None = None) -> None:
        """Wrap ``app`` (``None``: set :attr:`app` before the first request);
        ``on_refused`` is called once per refused request (metrics)."""
        self.app: ASGIApp | None = app
        self.max_in_flight = int(max_in_flight)
        self.on_refused = on_refused
        self.in_flight = 0
        self.admitted = 0
        """Requests the HTTP protocol let through whose tasks have not reached the guard."""
        self.refused_by_protocol = 0
        """Refusals written by the HTTP protocol (app.fast_refusal), never an ASGI call."""
        body = (b'{"detail":"overloaded: more than %d requests in flight; retry later"}'
                % self.max_in_flight)
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode()),
                   (b"retry-after", str(int(retry_after_s)).encode())]
        # Built once: a refusal is two sends of constant messages.
        self._start = {"type": "http.response.start", "status": 503, "headers": headers}
        self._body = {"type": "http.response.body", "body": body}
        self._raw_head = (b"HTTP/1.1 503 Service Unavailable\r\n" + b"".join(
            name + b": " + value + b"\r\n" for name, value in headers))
        self._raw_body = body
        # uvicorn's default headers the cached answers were built with (held, so the
        # identity check below cannot match a recycled object), and those answers.
        self._raw_for: list[tuple[bytes, bytes]] | None = None
        self._raw: dict[bool, bytes] = {}  # keep-alive → the whole answer

    def guards(self, raw_path: bytes) -> bool:
        """Whether requests on ``raw_path`` count and can be refused."""
        return raw_path.startswith(_GUARDED_RAW) and not raw_path.startswith(_UNGUARDED_RAW)

    def count_refusal(self) -> None:
        """Count one refusal written by the HTTP protocol."""
        self.refused_by_protocol += 1
        if self.on_refused is not None:
            self.on_refused()

    def raw_refusal(self, default_headers: list[tuple[bytes, bytes]], keep_alive: bool,
                    ) -> bytes:
        """The whole HTTP/1.1 refusal as bytes: this guard's status, headers and body,
        plus ``default_headers`` (uvicorn's ``date`` / ``server``) and, without
        ``keep_alive``, ``connection: close``. Rebuilt when uvicorn replaces its header
        list (once a second, for the date)."""
        if default_headers is not self._raw_for:
            self._raw_for = default_headers
            self._raw = {}
        raw = self._raw.get(keep_alive)
        if raw is None:
            extra = b"".join(name + b": " + value + b"\r\n" for name, value in default_headers)
            close = b"" if keep_alive else b"connection: close\r\n"
            raw = self._raw[keep_alive] = (self._raw_head + extra + close + b"\r\n"
                                           + self._raw_body)
        return raw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse at once, or count the request while the application serves it."""
        assert self.app is not None, "OverloadGuard.app was never set"
        if scope.pop(ADMITTED, False):  # counted by the protocol (app.fast_refusal)
            self.admitted -= 1
            self.in_flight += 1
            try:
                await self.app(scope, receive, send)
            finally:
                self.in_flight -= 1
            return
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(GUARDED_PREFIX) or \
                path.startswith(UNGUARDED):
            await self.app(scope, receive, send)
            return
        if self.in_flight + self.admitted >= self.max_in_flight:
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
