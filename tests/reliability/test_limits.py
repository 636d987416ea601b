"""Abuse limits and key handling over real HTTP: body size (413), history and k (422),
per-key rate limit (429 + Retry-After), API and admin keys (constant-time, never logged),
event ids that could reach Redis key names, and slow or oversized clients of the real
``ialp serve`` process (idle keep-alive closed, request heads bounded)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from app.main import create_app
from simulator_client.chaos.processes import procs
from tests.app.conftest import AUTH, ThreadedServer, make_settings
from trainer.transport.redis_server import EmbeddedRedis, free_port

FEED_KEY = "feed-key-3f9a7c"
ADMIN_KEY = "admin-key-81b2d4"


@pytest.fixture
def serve(redis_server: EmbeddedRedis) -> Iterator[Callable[..., ThreadedServer]]:
    started: list[ThreadedServer] = []

    def _serve(**overrides: Any) -> ThreadedServer:
        server = ThreadedServer(create_app(make_settings(redis_server.url, **overrides)))
        started.append(server.start())
        return server

    yield _serve
    for s in started:
        s.stop()


def _rec(http: httpx.Client, url: str, **body: Any) -> httpx.Response:
    payload = {"user_id": 1, "history": [1, 2], "k": 1, **body}
    return http.post(f"{url}/v1/recommend", json=payload)


def test_body_history_and_k_limits(serve: Callable[..., ThreadedServer]) -> None:
    s = serve(max_body_bytes=2048)
    with httpx.Client(timeout=10) as http:
        big = http.post(f"{s.url}/v1/recommend", content=b"[" + b"1," * 5000 + b"1]",
                        headers={"content-type": "application/json"})
        assert big.status_code == 413 and "2048 bytes" in big.json()["detail"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
            for _ in range(100):
                yield b" " * 100

        chunked = http.post(f"{s.url}/v1/feedback", content=chunks(),
                            headers={"content-type": "application/json"})
        assert chunked.status_code == 413
        long = _rec(http, s.url, history=list(range(31)))  # max_history 30
        assert long.status_code == 422
        assert long.json()["detail"][0]["loc"] == ["body", "history"]
        assert "at most 30" in long.json()["detail"][0]["msg"]
        k = _rec(http, s.url, k=6)  # max_k 5
        assert k.status_code == 422 and k.json()["detail"][0]["loc"] == ["body", "k"]
        assert _rec(http, s.url).status_code == 200


def test_rate_limit_per_configured_key_and_per_address(
        serve: Callable[..., ThreadedServer]) -> None:
    s = serve(api_key=FEED_KEY, rate_limit_per_s=0.5, rate_limit_burst=3,
              rate_limit_key_per_s=0.5, rate_limit_key_burst=2)
    with httpx.Client(timeout=10) as http:
        def rec(headers: dict[str, str]) -> httpx.Response:
            return http.post(f"{s.url}/v1/recommend", headers=headers,
                             json={"user_id": 1, "history": [1]})

        codes = [rec({}).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = rec({})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert "rate limit" in limited.json()["detail"]
        # Invented keys buy nothing: a wrong key draws from the address's bucket.
        assert rec({"X-API-Key": "client-b"}).status_code == 429
        assert rec({"X-API-Key": "random-" + "x" * 20}).status_code == 429
        # The configured key has its own bucket (burst 2).
        keyed = [rec({"X-API-Key": FEED_KEY}).status_code for _ in range(3)]
        assert keyed == [200, 200, 429]
        # Operations endpoints are not limited.
        assert http.get(f"{s.url}/healthz").status_code == 200
        text = http.get(f"{s.url}/metrics").text
        assert "ialp_rate_limited_total 5.0" in text


def test_anonymous_recommendations_are_rate_limited_by_default(
        serve: Callable[..., ThreadedServer]) -> None:
    s = serve()  # the shipped defaults: 100/s, burst 200 per address
    settings = s.svc.settings
    assert (settings.rate_limit_per_s, settings.rate_limit_burst) == (100.0, 200)
    with httpx.Client(timeout=10) as http:
        codes = [http.post(f"{s.url}/v1/noop", json={"user_id": 1, "history": [1]}
                           ).status_code for _ in range(400)]
    assert codes.count(429) >= 50, codes.count(429)
    assert codes[:150] == [200] * 150


def test_feedback_and_admin_keys_are_checked_and_never_logged(
        serve: Callable[..., ThreadedServer], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    s = serve(api_key=FEED_KEY, admin_api_key=ADMIN_KEY)
    with httpx.Client(timeout=10) as http:
        body = _rec(http, s.url).json()
        fb = {"event_id": body["event_id"], "item_id": body["items"][0], "reward": 1.0}
        assert http.post(f"{s.url}/v1/feedback", json=fb).status_code == 401
        wrong = http.post(f"{s.url}/v1/feedback", json=fb, headers={"X-API-Key": "nope"})
        assert wrong.status_code == 401 and "X-API-Key" in wrong.json()["detail"]
        ok = http.post(f"{s.url}/v1/feedback", json=fb, headers={"X-API-Key": FEED_KEY})
        assert ok.status_code == 202
        # Rollback is an admin call: the feedback key is not enough.
        for headers in ({}, {"X-API-Key": FEED_KEY}, {"X-API-Key": ADMIN_KEY[:-1]}):
            r = http.post(f"{s.url}/v1/policy/rollback", json={}, headers=headers)
            assert r.status_code == 401, r.text
        r = http.post(f"{s.url}/v1/policy/rollback", json={},
                      headers={"X-API-Key": ADMIN_KEY})
        assert r.status_code == 404  # authorised; nothing to roll back to
        answers = [wrong.text, ok.text, r.text]
    for secret in (FEED_KEY, ADMIN_KEY):
        assert secret not in caplog.text
        assert all(secret not in a for a in answers)


def test_admin_calls_fall_back_to_the_api_key(serve: Callable[..., ThreadedServer]) -> None:
    s = serve(api_key=FEED_KEY)  # no admin key configured: backward compatible
    with httpx.Client(timeout=10) as http:
        assert http.post(f"{s.url}/v1/policy/rollback", json={}).status_code == 401
        r = http.post(f"{s.url}/v1/policy/rollback", json={},
                      headers={"X-API-Key": FEED_KEY})
        assert r.status_code == 404


HOSTILE_EVENT_IDS = ["*", "a:b", "a b", "x" * 129, "", "../etc", "ialp:decision:*",
                     "id\nFLUSHALL", "é", "a\x00b", "{tag}"]


def test_event_ids_never_reach_redis_unvalidated(serve: Callable[..., ThreadedServer],
                                                 redis_server: EmbeddedRedis) -> None:
    s = serve()
    ns = s.svc.settings.namespace
    with httpx.Client(timeout=10) as http:
        body = _rec(http, s.url).json()
        for bad in HOSTILE_EVENT_IDS:
            r = http.post(f"{s.url}/v1/feedback", headers=AUTH,
                          json={"event_id": bad, "item_id": 1, "reward": 1.0})
            assert r.status_code == 422, (bad, r.text)
            assert r.json()["detail"][0]["loc"] == ["body", "event_id"]
        # The longest well-formed id is looked up safely and is simply unknown.
        r = http.post(f"{s.url}/v1/feedback", headers=AUTH,
                      json={"event_id": "a" * 128, "item_id": 1, "reward": 1.0})
        assert r.status_code == 404
        ok = http.post(f"{s.url}/v1/feedback", headers=AUTH, json={
            "event_id": body["event_id"], "item_id": body["items"][0], "reward": 1.0})
        assert ok.status_code == 202
    r = redis.Redis.from_url(redis_server.url)
    mine = [k.decode() for k in r.scan_iter(f"{ns}:*")]
    assert mine and all(k.startswith(f"{ns}:") for k in mine)
    kinds = {k.split(":")[1] for k in mine}
    assert kinds <= {"decision", "decisions", "fb", "feedback", "stats", "awaiting", "policy",
                     "trainer"}
    # Nothing any hostile id could have created exists anywhere on the server.
    for key in r.scan_iter("*"):
        assert not any(bad and bad in key.decode("utf-8", "replace")
                       for bad in HOSTILE_EVENT_IDS if len(bad) > 1), key


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_slow_and_oversized_clients_of_the_real_server(redis_server: EmbeddedRedis,
                                                        tmp_path: Path) -> None:
    port = free_port()
    with procs(tmp_path, redis_server.url) as ps:
        ps.api("api", port, IALP_TIMEOUT_KEEP_ALIVE_S=1, IALP_HTTP_PROTOCOL="h11",
               IALP_H11_MAX_INCOMPLETE_EVENT_SIZE=4096, IALP_MAX_BODY_BYTES=4096)
        # An idle keep-alive connection is closed by the server.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            head = _read_response(sock)
            assert head.startswith(b"HTTP/1.1 200")
            rest = head
            while True:  # the body, then EOF when the server closes the idle connection
                chunk = sock.recv(4096)
                if not chunk:
                    break
                rest += chunk
            assert b"policy_version" in rest
        # A request head beyond the service's limit is answered 431; one beyond what
        # h11 buffers is cut off by the server (400) before the app sees it.
        for pad, status in ((20_000, b"431"), (300_000, b"400")):
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                try:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: "
                                 + b"a" * pad + b"\r\n\r\n")
                    head = _read_response(sock)
                except (BrokenPipeError, ConnectionResetError):
                    head = b""  # cut off while sending: refused as well
                assert head.startswith(b"HTTP/1.1 " + status) or (
                    status == b"400" and head == b""), head[:100]
        # A body declared too large is refused before it is read.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Type: "
                         b"application/json\r\nContent-Length: 10000000\r\n\r\n{")
            head = _read_response(sock)
            assert head.startswith(b"HTTP/1.1 413"), head[:100]
        with httpx.Client(timeout=10) as http:  # and the server still serves
            assert _rec(http, f"http://127.0.0.1:{port}").status_code == 200
