"""Framing of HTTP/1.1 answers and encoding of requests."""

from __future__ import annotations

import pytest

from simulator_client.loadgen.wire import (
    ProtocolError,
    encode_get,
    encode_post,
    parse_response,
)


def test_content_length_answer_and_partial_reads() -> None:
    raw = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
           b"Retry-After: 2\r\ncontent-length: 5\r\n\r\nhello")
    for cut in range(len(raw)):
        assert parse_response(raw[:cut]) is None
    got = parse_response(raw)
    assert got is not None
    resp, used = got
    assert (resp.status, resp.retry_after, resp.close, resp.body) == (503, True, False, b"hello")
    assert used == len(raw)


def test_chunked_answer_with_trailer_and_connection_close() -> None:
    raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
           b"4\r\nabcd\r\n3;ext=1\r\nefg\r\n0\r\nX-Trailer: 1\r\n\r\n")
    for cut in range(len(raw)):
        assert parse_response(raw[:cut]) is None
    got = parse_response(raw + b"extra")
    assert got is not None
    resp, used = got
    assert (resp.status, resp.body, resp.close, resp.retry_after) == (200, b"abcdefg", True,
                                                                       False)
    assert used == len(raw)


def test_no_body_statuses_and_garbage() -> None:
    got = parse_response(b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n")
    assert got is not None and got[0].status == 204 and got[0].body == b""
    with pytest.raises(ProtocolError):
        parse_response(b"SSH-2.0-OpenSSH\r\n\r\n")
    with pytest.raises(ProtocolError):
        parse_response(b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nbody until close")


def test_encoded_requests_carry_length_and_key() -> None:
    req = encode_post("h:1", "/v1/x", b'{"a":1}', "k")
    head, body = req.split(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/x HTTP/1.1\r\nHost: h:1\r\n")
    assert b"\r\nContent-Length: 7" in head and b"\r\nX-API-Key: k" in head
    assert body == b'{"a":1}'
    assert b"X-API-Key" not in encode_get("h", "/healthz")
