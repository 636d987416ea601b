"""Graceful overload on a real uvicorn server and Redis: 503 with Retry-After at once
beyond the in-flight and queue-wait bounds, and a healthy service afterwards."""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

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
