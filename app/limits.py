"""Abuse limits in front of the routes: request body size and per-key request rate.

Both are pure ASGI middlewares, so an oversized or over-limit request is refused before
FastAPI parses anything. The rate limit is a token bucket per configured API key (per
client address for requests without one) held in this process: with N replicas behind a
balancer a client can reach N times the configured rate, so set it per replica.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def send_json(send: Send, status: int, detail: str,
                    headers: dict[str, str] | None = None) -> None:
    """Answer ``{"detail": ...}`` with ``status`` straight from a middleware."""
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"),
           (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


class RequestLimitMiddleware:
    """431 for request heads over ``max_header_bytes``; 413 for bodies over ``max_bytes``
    (declared or streamed), before parsing."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_header_bytes: int) -> None:
        """Wrap ``app``."""
        self.app = app
        self.max_bytes = max_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse, or pass the (fully read, bounded) body on."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        head = sum(len(k) + len(v) + 4 for k, v in scope.get("headers", ()))
        head += len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        if head > self.max_header_bytes:
            await send_json(send, 431, f"request head of {head} bytes exceeds the limit "
                            f"of {self.max_header_bytes} bytes")
            return
        if scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        too_big = (f"request body exceeds the limit of {self.max_bytes} bytes")
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                if int(declared) > self.max_bytes:
                    await send_json(send, 413, too_big)
                    return
            except ValueError:
                await send_json(send, 400, "invalid Content-Length header")
                return
        # Chunked (or lying) clients: read at most max_bytes, then stop listening.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # disconnect: let the app see it
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await send_json(send, 413, too_big)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class TokenBuckets:
    """Token buckets keyed by client, least recently used dropped beyond ``max_clients``."""

    def __init__(self, rate_per_s: float, burst: int, max_clients: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``rate_per_s`` tokens per second refill up to ``burst``."""
        self.rate = rate_per_s
        self.burst = float(burst)
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str) -> float:
        """Take one token: 0.0 when allowed, else seconds until a token is available."""
        now = self.clock()
        tokens, last = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait


class RateLimitMiddleware:
    """429 with ``Retry-After`` when a client exceeds its rate on ``/v1/`` routes.

    A request carrying one of the configured keys draws from that key's bucket
    (``keyed``); every other request, including one with a wrong or random key, draws from
    its client address's bucket (``anonymous``), so inventing keys buys no extra rate.
    ``None`` for either table: that kind of caller is not limited."""

    def __init__(self, app: ASGIApp, anonymous: TokenBuckets | None,
                 keyed: TokenBuckets | None, on_limited: Callable[[], None],
                 known_keys: Iterable[bytes] = (), header: bytes = b"x-api-key") -> None:
        """Clients are told apart by a configured API key, else by address."""
        self.app = app
        self.anonymous = anonymous
        self.keyed = keyed
        self.on_limited = on_limited
        self.known_keys = [k for k in known_keys if k]
        self.header = header

    def _client(self, scope: Scope) -> tuple[TokenBuckets | None, str]:
        key = _header(scope, self.header)
        if key and any([hmac.compare_digest(key, k) for k in self.known_keys]):
            # A digest, so the bucket table never holds a key in clear.
            return self.keyed, "key:" + hashlib.sha256(key).hexdigest()[:32]
        client = scope.get("client") or ("?", 0)
        return self.anonymous, f"addr:{client[0]}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse or pass on."""
        if scope["type"] == "http" and str(scope.get("path", "")).startswith("/v1/"):
            buckets, client = self._client(scope)
            wait = buckets.take(client) if buckets is not None else 0.0
            if wait > 0.0:
                self.on_limited()
                await send_json(send, 429, "rate limit exceeded for this client; retry "
                                f"after {wait:.2f} s",
                                {"Retry-After": str(max(1, math.ceil(wait)))})
                return
        await self.app(scope, receive, send)
