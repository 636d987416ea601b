"""Graceful overload on a real uvicorn server and Redis: 503 with Retry-After at once
beyond the in-flight and queue-wait bounds, and a healthy service afterwards."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from app.fast_refusal import _one_plain_request
from app.overload import OverloadGuard
from app.settings import ServiceSettings
from tests.app.conftest import ThreadedServer, make_settings

BODY = {"user_id": 3, "history": [1, 2, 3], "k": 1}


def _counter(metrics: str, reason: str) -> float:
    m = re.search(rf'ialp_overloaded_total\{{reason="{reason}"\}} ([0-9.e+]+)', metrics)
    assert m is not None, metrics
    return float(m.group(1))


def test_requests_beyond_the_in_flight_bound_get_503_with_retry_after(
        http: httpx.Client, serve: Callable[[ServiceSettings], ThreadedServer],
        module_redis: str) -> None:
    srv = serve(make_settings(module_redis, max_in_flight=2, retry_after_s=3,
                              rate_limit_per_s=0))
    with httpx.Client(timeout=10) as client, ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(lambda _: client.post(f"{srv.url}/v1/recommend", json=BODY),
                                range(96)))
    statuses = [a.status_code for a in answers]
    refused = [a for a in answers if a.status_code == 503]
    assert set(statuses) <= {200, 503}, statuses
    assert refused, "24 concurrent clients never exceeded 2 requests in flight"
    assert statuses.count(200) >= 2
    for a in refused:
        assert a.headers["Retry-After"] == "3"
        assert "overloaded" in a.json()["detail"]
    metrics = http.get(f"{srv.url}/metrics").text
    assert _counter(metrics, "in_flight") == len(refused)
    # Whichever path refused or served them, every count came back to zero.
    guard = srv.app.overload_guard  # type: ignore[attr-defined]
    assert (guard.in_flight, guard.admitted) == (0, 0)
    # Health and metrics are never refused; the service serves normally afterwards.
    assert http.get(f"{srv.url}/healthz").status_code == 200
    after = [http.post(f"{srv.url}/v1/recommend", json=BODY) for _ in range(10)]
    assert [a.status_code for a in after] == [200] * 10


def test_a_call_waiting_past_the_queue_bound_gets_503_not_a_late_answer(
        http: httpx.Client, serve: Callable[[ServiceSettings], ThreadedServer],
        module_redis: str) -> None:
    # A bound shorter than any wait: every batched call is refused.
    srv = serve(make_settings(module_redis, max_queue_wait_ms=0.001, retry_after_s=2))
    answer = http.post(f"{srv.url}/v1/recommend", json=BODY)
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "2"
    assert "overloaded" in answer.json()["detail"]
    assert _counter(http.get(f"{srv.url}/metrics").text, "queue_wait") >= 1
    # Refused calls never reach the policy: nothing was recommended or recorded.
    assert "ialp_recommendations_total 0.0" in http.get(f"{srv.url}/metrics").text
    assert http.post(f"{srv.url}/v1/noop", json=BODY).status_code == 200


def test_the_bounds_default_to_values_that_never_refuse_a_lone_client(
        http: httpx.Client, serve: Callable[[ServiceSettings], ThreadedServer],
        module_redis: str) -> None:
    srv = serve(make_settings(module_redis))
    answers = [http.post(f"{srv.url}/v1/recommend", json=BODY) for _ in range(20)]
    assert [a.status_code for a in answers] == [200] * 20
    metrics = http.get(f"{srv.url}/metrics").text
    assert _counter(metrics, "in_flight") == 0 and _counter(metrics, "queue_wait") == 0


def _exchange(sock: socket.socket, raw: bytes) -> bytes:
    """Send ``raw`` and read one whole answer (head + content-length body)."""
    sock.sendall(raw)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    assert len(body) == length, "more bytes than one answer"
    return head + b"\r\n\r\n" + body


def _post(path: str, body: bytes, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n{extra}\r\n").encode() + body


def test_the_http_protocol_refuses_a_full_replica_without_a_request_task(
        http: httpx.Client, serve: Callable[[ServiceSettings], ThreadedServer],
        module_redis: str) -> None:
    """With the guard full, guarded requests are answered 503 + Retry-After by the HTTP
    protocol itself (app.fast_refusal); the connection stays usable, bodies that arrive
    in pieces are skipped whole, and the other routes still pass."""
    srv = serve(make_settings(module_redis, max_in_flight=4, retry_after_s=7,
                              rate_limit_per_s=0))
    guard = srv.app.overload_guard  # type: ignore[attr-defined]
    body = json.dumps(BODY).encode()
    host, port = "127.0.0.1", srv.port
    assert http.post(f"{srv.url}/v1/recommend", json=BODY).status_code == 200
    guard.in_flight += 1000  # full: as if 1,000 requests were being served
    try:
        with socket.create_connection((host, port), timeout=5) as sock:
            answer = _exchange(sock, _post("/v1/recommend?x=1", body))
            assert answer.startswith(b"HTTP/1.1 503 ")
            assert b"retry-after: 7\r\n" in answer and b"date: " in answer.lower()
            assert json.loads(answer.partition(b"\r\n\r\n")[2])["detail"].startswith(
                "overloaded")
            # A body in two pieces, then the next request on the same connection.
            sock.sendall(_post("/v1/feedback", body)[:-5])
            time.sleep(0.05)
            answer = _exchange(sock, body[-5:])
            assert answer.startswith(b"HTTP/1.1 503 ")
            # Health is never refused, on the same kept-alive connection.
            answer = _exchange(sock, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 200 ")
        assert guard.refused_by_protocol == 2
        # Connection: close is honoured: the answer says so and the socket closes.
        with socket.create_connection((host, port), timeout=5) as sock:
            answer = _exchange(sock, _post("/v1/recommend", body, "connection: close\r\n"))
            assert answer.startswith(b"HTTP/1.1 503 ") and b"connection: close" in answer
            assert sock.recv(10) == b""
        # Expect: 100-continue is left to the application's own guard (still 503).
        with socket.create_connection((host, port), timeout=5) as sock:
            answer = _exchange(sock, _post("/v1/recommend", body,
                                           "expect: 100-continue\r\n"))
            assert answer.startswith(b"HTTP/1.1 503 ") and b"retry-after: 7" in answer
        assert guard.refused_by_protocol == 3
    finally:
        guard.in_flight -= 1000
    metrics = http.get(f"{srv.url}/metrics").text
    assert _counter(metrics, "in_flight") == 4  # every refusal counted, either way
    assert (guard.in_flight, guard.admitted) == (0, 0)
    assert http.post(f"{srv.url}/v1/recommend", json=BODY).status_code == 200


@pytest.mark.parametrize(("raw", "plain"), [
    (b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", True),
    (b"POST /v1/feedback?a=1 HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n", True),
    (b"GET /v1/noop HTTP/1.1\r\nhost: x\r\n\r\n", True),
    # Partial body, two pipelined requests, extra bytes: the parser decides.
    (b"POST /v1/recommend HTTP/1.1\r\ncontent-length: 3\r\n\r\n{}", False),
    (b"GET /v1/noop HTTP/1.1\r\n\r\nGET /v1/noop HTTP/1.1\r\n\r\n", False),
    (b"POST /v1/recommend HTTP/1.1\r\ncontent-length: 1\r\n\r\n{}", False),
    # Unguarded routes, other versions, incomplete heads.
    (b"GET /healthz HTTP/1.1\r\n\r\n", False),
    (b"GET /v1/policy HTTP/1.1\r\n\r\n", False),
    (b"GET /v1/noop HTTP/1.0\r\n\r\n", False),
    (b"GET /v1/noop HTTP/1.1\r\nhost: x\r\n", False),
    # Headers that change framing or the connection, and repeated or odd lengths.
    (b"POST /v1/recommend HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", False),
    (b"POST /v1/recommend HTTP/1.1\r\nExpect: 100-continue\r\ncontent-length: 0\r\n\r\n",
     False),
    (b"GET /v1/noop HTTP/1.1\r\nConnection: close\r\n\r\n", False),
    (b"POST /v1/recommend HTTP/1.1\r\ncontent-length: 0\r\ncontent-length: 0\r\n\r\n", False),
    (b"POST /v1/recommend HTTP/1.1\r\ncontent-length: -1\r\n\r\n", False),
])
def test_only_one_whole_plain_request_skips_the_parser(raw: bytes, plain: bool) -> None:
    guard = OverloadGuard(None, max_in_flight=1, retry_after_s=1)
    assert _one_plain_request(raw, guard) is plain
