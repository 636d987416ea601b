"""HTTP/1.1 on the wire: requests encoded once, responses framed with a few byte searches.

The load generator shares the machine's cores with the service, so the work it does per
request decides how much load it can offer: requests are built as bytes before the run,
and a response is framed by its status line and ``Content-Length`` (or chunked
encoding) without a general-purpose parser.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


def encode_post(host: str, path: str, body: bytes, api_key: str | None = None) -> bytes:
    """A keep-alive ``POST`` of a JSON body, ready to write to a socket."""
    key = f"X-API-Key: {api_key}\r\n" if api_key else ""
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"{key}Content-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


def encode_get(host: str, path: str, api_key: str | None = None) -> bytes:
    """A keep-alive ``GET``."""
    key = f"X-API-Key: {api_key}\r\n" if api_key else ""
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{key}\r\n".encode("latin-1")


def json_body(payload: Any) -> bytes:
    """Compact JSON, as sent."""
    return json.dumps(payload, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Response:
    """One framed response."""

    status: int
    """HTTP status code."""
    retry_after: bool
    """Whether a ``Retry-After`` header was present."""
    close: bool
    """Whether the server announced ``Connection: close``."""
    body: bytes
    """The (de-chunked) body."""


class ProtocolError(Exception):
    """The bytes received are not an HTTP/1.1 response this reader can frame."""


def parse_response(buf: bytes) -> tuple[Response, int] | None:
    """The first complete response in ``buf`` and the bytes it used; ``None`` if more
    bytes are needed. Raises :class:`ProtocolError` on garbage."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    if not buf.startswith(b"HTTP/1."):
        raise ProtocolError(f"not an HTTP response: {buf[:40]!r}")
    try:
        status = int(buf[9:12])
    except ValueError as exc:
        raise ProtocolError(f"bad status line: {buf[:40]!r}") from exc
    head = buf[:end + 2].lower()
    start = end + 4
    i = head.find(b"\r\ncontent-length:")
    if i >= 0:
        length = int(head[i + 17:head.index(b"\r\n", i + 2)])
        if len(buf) < start + length:
            return None
        body, used = buf[start:start + length], start + length
    elif b"\r\ntransfer-encoding: chunked" in head:
        got = _dechunk(buf, start)
        if got is None:
            return None
        body, used = got
    elif status in (204, 304) or 100 <= status < 200:
        body, used = b"", start
    else:
        # Body until the server closes: not seen from the service; refuse rather than hang.
        raise ProtocolError("response without Content-Length or chunked encoding")
    return Response(status, b"\r\nretry-after:" in head, b"\r\nconnection: close" in head,
                    body), used


def _dechunk(buf: bytes, pos: int) -> tuple[bytes, int] | None:
    parts: list[bytes] = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            size = int(buf[pos:eol].split(b";", 1)[0], 16)
        except ValueError as exc:
            raise ProtocolError("bad chunk size") from exc
        pos = eol + 2
        if size == 0:
            # Optional trailers end with an empty line.
            end = buf.find(b"\r\n", pos)
            while end > pos:
                pos = end + 2
                end = buf.find(b"\r\n", pos)
            if end < 0:
                return None
            return b"".join(parts), end + 2
        if len(buf) < pos + size + 2:
            return None
        parts.append(buf[pos:pos + size])
        pos += size + 2
