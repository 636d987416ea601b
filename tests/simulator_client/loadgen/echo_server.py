"""A small ASGI app the load-engine tests serve with uvicorn in a child process.

Routes: ``/ok`` (200), ``/status/NNN`` (that status; 503 carries ``Retry-After``),
``/block/MS`` (holds the server's only event loop for MS milliseconds, so requests queue
as in a saturated server), ``/chunked`` (a chunked body), ``/count`` (requests served so
far, not counting itself).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

served = 0


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI entry point."""
    global served
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    path: str = scope["path"]
    if path == "/count":
        await _answer(send, 200, json.dumps({"served": served}).encode())
        return
    served += 1
    if path.startswith("/status/"):
        status = int(path.rsplit("/", 1)[1])
        extra = [(b"retry-after", b"1")] if status == 503 else []
        await _answer(send, status, b'{"detail":"test"}', extra)
    elif path.startswith("/block/"):
        time.sleep(int(path.rsplit("/", 1)[1]) / 1000.0)
        await _answer(send, 200, b"{}")
    elif path == "/chunked":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"part":', "more_body": True})
        await send({"type": "http.response.body", "body": b'"two"}', "more_body": False})
    else:
        await _answer(send, 200, b'{"ok":true}')


async def _answer(send: Send, status: int, body: bytes,
                  extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(extra or [])]})
    await send({"type": "http.response.body", "body": body})
