"""Refusals that never become a request: 503 + Retry-After written by the HTTP protocol.

:class:`app.overload.OverloadGuard` refuses requests beyond ``max_in_flight`` before any
routing, but by then uvicorn has built the request's scope, a request/response cycle and
an asyncio task, and the 503 goes through the ASGI ``send`` machinery: 27.5 µs of the
API process's CPU per refusal (11–12 µs with this protocol; ``benchmarks/overload.py``).
At twice the capacity there are as many refusals as served requests, so that cost is
taken from the served ones (docs/performance.md, "Overload").

:class:`FastRefusalProtocol` is uvicorn's httptools protocol with two changes. While the
guard is full, a read that is exactly one whole, plain request on a guarded route is
answered from its raw bytes, without the parser; otherwise, when a request's head is
complete, it writes the guard's 503 (the same status, body and ``Retry-After``, plus
uvicorn's ``date`` / ``server`` headers) straight to the socket and skips the request's
body, with no scope, cycle or task. A request it
lets through counts towards the bound at once (:attr:`OverloadGuard.admitted`, until its
task reaches the guard), so a burst read in one go cannot overshoot it. Everything else
falls through to uvicorn's own path, where the ASGI guard still decides:

* requests on routes the guard never refuses (health, metrics, operator routes);
* a connection with a response still in progress (pipelining: answers must keep order)
  or whose client has stopped reading its answers (uvicorn's path waits for the socket
  to drain; written here they would pile up in memory);
* ``Expect: 100-continue`` (the client may not send the body the parser would wait for)
  and protocol upgrades;
* applications without a guard.

``Connection: close`` and HTTP/1.0 requests get ``connection: close`` and the socket is
closed after the request's body, as uvicorn does; kept-alive connections get uvicorn's
keep-alive timer, as after any response.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.overload import ADMITTED, OverloadGuard

__all__ = ["FastRefusalProtocol", "find_guard", "http_protocol"]


def find_guard(app: Any) -> OverloadGuard | None:
    """The :class:`OverloadGuard` inside ``app`` (followed through ``.app`` wrappers, as
    uvicorn's proxy-header middleware and the service's application), or ``None``."""
    for _ in range(16):  # wrappers are few; never loop on a cycle
        guard = getattr(app, "overload_guard", None)
        if isinstance(guard, OverloadGuard):
            return guard
        if isinstance(app, OverloadGuard):
            return app
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


class FastRefusalProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing beyond the guard's bound without a task."""

    def __init__(self, config: Config, server_state: ServerState,
                 app_state: dict[str, Any], _loop: asyncio.AbstractEventLoop | None = None,
                 ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.guard = find_guard(self.app)
        self._skipping = False  # the refused request's body is still arriving
        self._close_after = False  # ... and the connection closes after it
        self._in_message = False  # the parser holds part of a request

    def data_received(self, data: bytes) -> None:
        guard = self.guard
        # Quickest: the read is exactly one whole, plain request on a guarded route and
        # the guard is full: answer it without running the parser at all (about half a
        # refusal's cost goes to the parser's per-header callbacks).
        if guard is not None and not self._in_message \
                and guard.in_flight + guard.admitted >= guard.max_in_flight \
                and self._may_refuse_here() and _one_plain_request(data, guard):
            self._unset_keepalive_if_required()
            self.transport.write(guard.raw_refusal(self.server_state.default_headers, True))
            guard.count_refusal()
            self.on_response_complete()
            return
        super().data_received(data)

    def on_message_begin(self) -> None:
        self._in_message = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        guard = self.guard
        if guard is not None and self._may_refuse_here() and guard.guards(self._path()):
            if guard.in_flight + guard.admitted >= guard.max_in_flight:
                self._refuse(guard)
                return
            if not self._over_uvicorn_limit():
                # Counted from now, not from when its task first runs: one read of the
                # event loop delivers many requests, and all would pass a count that
                # only the tasks raise (then be refused the slow way, by the ASGI guard).
                guard.admitted += 1
                self.scope[ADMITTED] = True  # type: ignore[literal-required]
        super().on_headers_complete()

    def _over_uvicorn_limit(self) -> bool:
        """Whether uvicorn will answer this request itself (``limit_concurrency``), so
        that it never reaches the guard."""
        limit = self.limit_concurrency
        return limit is not None and (len(self.connections) >= limit
                                      or len(self.tasks) >= limit)

    def _may_refuse_here(self) -> bool:
        """Whether a refusal may be written now: nothing in progress on this connection,
        a client that reads its answers (else uvicorn's path, which waits for the socket
        to drain), no body the client holds back, no upgrade, no root path (the guard's
        paths are the application's own)."""
        cycle = self.cycle
        return (cycle is None or cycle.response_complete) and not self.pipeline \
            and not self.flow.write_paused and not self.expect_100_continue \
            and not self.root_path and not self.parser.should_upgrade()

    def _path(self) -> bytes:
        url = self.url
        end = min((i for i in (url.find(b"?"), url.find(b"#")) if i >= 0), default=len(url))
        return url[:end]

    def _refuse(self, guard: OverloadGuard) -> None:
        keep_alive = self.parser.get_http_version() == "1.1" and self.parser.should_keep_alive()
        self.transport.write(guard.raw_refusal(self.server_state.default_headers, keep_alive))
        guard.count_refusal()
        self._skipping = True
        self._close_after = not keep_alive

    def connection_lost(self, exc: Exception | None) -> None:
        # Pipelined requests that will never run leave the count they were admitted to.
        if self.guard is not None:
            for cycle, _ in self.pipeline:
                if cycle.scope.pop(ADMITTED, False):  # type: ignore[misc]
                    self.guard.admitted -= 1
        super().connection_lost(exc)

    def on_body(self, body: bytes) -> None:
        if not self._skipping:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        if not self._skipping:
            super().on_message_complete()
            return
        self._skipping = False
        if self._close_after:
            self.transport.close()
            return
        # As after any answer: count it, keep reading, arm the keep-alive timer.
        self.on_response_complete()


_REFUSED_HEADERS = (b"transfer-encoding", b"expect", b"upgrade", b"connection")
"""Headers that send a request through the parser (bodies without a length, held-back
bodies, protocol switches, connection handling)."""


def _one_plain_request(data: bytes, guard: OverloadGuard) -> bool:
    """Whether ``data`` is exactly one complete HTTP/1.1 request on a route ``guard``
    guards, with a body of ``content-length`` bytes (or none) and none of
    :data:`_REFUSED_HEADERS`. Anything else (partial or pipelined requests, other
    versions, repeated lengths) returns False and goes through the parser, so the next
    request always starts where this one ends."""
    line_end = data.find(b"\r\n")
    head_end = data.find(b"\r\n\r\n")
    if line_end <= 0 or head_end < line_end:
        return False
    parts = data[:line_end].split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1":
        return False
    target = parts[1]
    query = target.find(b"?")
    if not guard.guards(target if query < 0 else target[:query]):
        return False
    head = data[line_end:head_end + 2].lower()  # "\r\nname: value" ... "\r\n"
    for name in _REFUSED_HEADERS:
        if b"\r\n" + name in head:
            return False
    at = head.find(b"\r\ncontent-length:")
    length = 0
    if at >= 0:
        if head.find(b"\r\ncontent-length:", at + 1) >= 0:
            return False
        value = head[at + 17:head.find(b"\r\n", at + 2)].strip()
        if not value.isdigit():
            return False
        length = int(value)
    return len(data) == head_end + 4 + length


def http_protocol(setting: str) -> str | type[asyncio.Protocol]:
    """uvicorn's ``http`` option for the service's ``http_protocol`` setting: the
    fast-refusal protocol wherever httptools would serve (``auto`` with httptools
    installed, or ``httptools``), else the setting itself (``h11``: the ASGI guard alone
    refuses)."""
    if setting == "h11":
        return setting
    try:
        import httptools  # noqa: F401
    except ImportError:  # pragma: no cover (a dependency of uvicorn[standard])
        return setting
    return FastRefusalProtocol
