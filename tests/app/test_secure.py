"""Secure by default, bounded rewards, honest readiness and no 5xx on any body: the
service over real HTTP against a real Redis (and, for the start-up defaults, the real
``ialp serve`` process)."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from app.settings import ServiceSettings
from ialp.procs import spawn_ialp, stop_all
from trainer.transport.redis_server import EmbeddedRedis, free_port

from .conftest import AUTH, ThreadedServer, make_settings

ROOT = Path(__file__).resolve().parents[2]


def _event(http: httpx.Client, url: str) -> dict[str, Any]:
    resp = http.post(f"{url}/v1/recommend", json={"user_id": 1, "history": [1, 2], "k": 2})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def _feedback(http: httpx.Client, url: str, event: dict[str, Any], reward: Any,
              headers: dict[str, str] | None = None) -> httpx.Response:
    return http.post(f"{url}/v1/feedback", headers=AUTH if headers is None else headers,
                     json={"event_id": event["event_id"], "item_id": event["items"][0],
                           "reward": reward})


# -- reward bounds ------------------------------------------------------------------------
def test_rewards_outside_the_range_are_422_naming_field_and_range(
        http: httpx.Client, serve: Callable[[ServiceSettings], ThreadedServer],
        module_redis: str) -> None:
    srv = serve(make_settings(module_redis))
    info = http.get(f"{srv.url}/v1/policy").json()
    assert (info["reward_min"], info["reward_max"]) == (-10.0, 10.0)
    for bad in (10.0001, -10.5, 1e30, -1e300):
        event = _event(http, srv.url)
        resp = _feedback(http, srv.url, event, bad)
        assert resp.status_code == 422, (bad, resp.text)
        err = resp.json()["detail"][0]
        assert err["loc"] == ["body", "reward"]
        assert "[-10, 10]" in err["msg"] and "IALP_REWARD_MAX" in err["msg"]
        # The event stays open: a correct reward is still accepted.
        assert _feedback(http, srv.url, event, 4.0).status_code == 202
    for edge in (-10.0, 10.0, 0.0, 5.657):  # both ends included; Coat's largest reward
        assert _feedback(http, srv.url, _event(http, srv.url), edge).status_code == 202
    text = http.get(f"{srv.url}/metrics").text
    assert 'ialp_feedback_total{outcome="rejected"} 4.0' in text


def test_the_reward_range_is_configurable_and_checked_at_start(
        http: httpx.Client, serve: Callable[[ServiceSettings], ThreadedServer],
        module_redis: str) -> None:
    srv = serve(make_settings(module_redis, reward_min=0.0, reward_max=1.0))
    info = http.get(f"{srv.url}/v1/policy").json()
    assert (info["reward_min"], info["reward_max"]) == (0.0, 1.0)
    resp = _feedback(http, srv.url, _event(http, srv.url), 2.0)
    assert resp.status_code == 422 and "[0, 1]" in resp.json()["detail"][0]["msg"]
    assert _feedback(http, srv.url, _event(http, srv.url), 1.0).status_code == 202
    with pytest.raises(ValueError, match="reward_min"):
        make_settings(module_redis, reward_min=2.0, reward_max=1.0)
    with pytest.raises(ValueError, match="default_reward"):
        make_settings(module_redis, default_reward=-20.0)


# -- keys -------------------------------------------------------------------------------
def test_without_a_key_feedback_and_rollback_are_refused(
        http: httpx.Client, serve: Callable[[ServiceSettings], ThreadedServer],
        module_redis: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="app.deps"):
        srv = serve(make_settings(module_redis, api_key=None))
    assert "no IALP_API_KEY is set" in caplog.text
    event = _event(http, srv.url)  # recommending needs no key
    for headers in ({}, {"X-API-Key": ""}, {"X-API-Key": "anything"}):
        fb = _feedback(http, srv.url, event, 1.0, headers)
        assert fb.status_code == 401 and "--insecure" in fb.json()["detail"]
        rb = http.post(f"{srv.url}/v1/policy/rollback", json={}, headers=headers)
        assert rb.status_code == 401
    assert fb.headers["www-authenticate"] == "ApiKey"


def test_the_insecure_opt_out_accepts_anonymous_calls_and_warns(
        http: httpx.Client, serve: Callable[[ServiceSettings], ThreadedServer],
        module_redis: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="app.deps"):
        srv = serve(make_settings(module_redis, api_key=None, allow_anonymous=True))
    assert "INSECURE" in caplog.text
    assert _feedback(http, srv.url, _event(http, srv.url), 1.0, {}).status_code == 202
    rb = http.post(f"{srv.url}/v1/policy/rollback", json={})
    assert rb.status_code == 404  # authorised; nothing to roll back to


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    with httpx.Client(timeout=5) as http:
        while True:
            try:
                if http.get(f"{url}/readyz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"serve did not get ready:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)


def test_a_fresh_ialp_serve_refuses_anonymous_feedback_and_rollback(
        redis_server: EmbeddedRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
        ) -> None:
    for name in list(os.environ):
        if name.startswith("IALP_"):
            monkeypatch.delenv(name)
    common = ["--redis-url", redis_server.url, "--num-items", "20"]
    ports = free_port(), free_port()
    logs = tmp_path / "plain.log", tmp_path / "insecure.log"
    procs = [spawn_ialp(["serve", *common, "--namespace", "fresh-a", "--port",
                         str(ports[0])], logs[0], cwd=ROOT),
             spawn_ialp(["serve", *common, "--namespace", "fresh-b", "--port",
                         str(ports[1]), "--insecure"], logs[1], cwd=ROOT)]
    try:
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        for url, proc, log in zip(urls, procs, logs, strict=True):
            _wait_ready(url, proc, log)
        with httpx.Client(timeout=10) as http:
            plain, insecure = urls
            event = _event(http, plain)
            assert _feedback(http, plain, event, 1.0, {}).status_code == 401
            assert http.post(f"{plain}/v1/policy/rollback", json={}).status_code == 401
            event = _event(http, insecure)
            assert _feedback(http, insecure, event, 1.0, {}).status_code == 202
            assert http.post(f"{insecure}/v1/policy/rollback", json={}).status_code == 404
    finally:
        stop_all(procs)
    assert "no IALP_API_KEY is set" in logs[0].read_text()
    assert "INSECURE" in logs[1].read_text() and "INSECURE" not in logs[0].read_text()


# -- readiness -------------------------------------------------------------------------
def test_readiness_is_false_while_decisions_cannot_be_written(
        http: httpx.Client, serve: Callable[[ServiceSettings], ThreadedServer],
        private_redis: EmbeddedRedis) -> None:
    srv = serve(make_settings(private_redis.url, redis_cooldown_s=30.0))
    r = redis.Redis.from_url(private_redis.url)
    assert http.get(f"{srv.url}/readyz").status_code == 200
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", 1)  # every write is refused with OOM; PING still answers
    try:
        assert r.ping()
        assert _event(http, srv.url)["decision_recorded"] is False
        ready = http.get(f"{srv.url}/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["redis"] is True and ready.json()["decisions_recordable"] is False
        assert ready.headers["Retry-After"] == "2"
        # Still unready while the cooldown runs, even without recommend traffic.
        assert http.get(f"{srv.url}/readyz").status_code == 503
    finally:
        r.config_set("maxmemory", 0)
    # Redis accepts writes again: the probe says so at once (no 30 s cooldown to sit out),
    # and the recommend path records decisions again.
    ready = http.get(f"{srv.url}/readyz")
    assert ready.status_code == 200 and ready.json()["decisions_recordable"] is True
    assert _event(http, srv.url)["decision_recorded"] is True


# -- no 5xx on raw bytes ------------------------------------------------------------------
BAD_BODIES = [b"\xff\xfe{\x80", b"\x80", b"{\"user_id\": \"\xe9\"}", b"\x00" * 10, b""]
CONTENT_TYPES = [None, b"text/plain", b"application/octet-stream", b"application/json",
                 b"application/x-www-form-urlencoded", b"multipart/form-data",
                 b"multipart/form-data; boundary=x", b"application/json; charset=latin-1",
                 b"\xff/\xfe"]


@pytest.mark.parametrize("path", ["/v1/recommend", "/v1/feedback", "/v1/policy/rollback",
                                  "/v1/noop"])
def test_non_utf8_bodies_under_any_content_type_are_4xx(
        http: httpx.Client, serve: Callable[[ServiceSettings], ThreadedServer],
        module_redis: str, path: str) -> None:
    srv = serve(make_settings(module_redis, rate_limit_per_s=0.0))
    for ctype in CONTENT_TYPES:
        for body in BAD_BODIES:
            headers: dict[str, str | bytes] = dict(AUTH)
            if ctype is not None:
                headers["content-type"] = ctype
            resp = http.post(f"{srv.url}{path}", content=body, headers=headers)
            assert 400 <= resp.status_code < 500, (ctype, body, resp.status_code, resp.text)
            assert resp.json()["detail"], (ctype, body)
    assert http.get(f"{srv.url}/healthz").status_code == 200
