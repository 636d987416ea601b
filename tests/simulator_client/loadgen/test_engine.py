"""The load engine against a real uvicorn server (``echo_server.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from simulator_client.loadgen import LoadShape, Target, Workload, engine, run_phase
from simulator_client.loadgen.wire import encode_get, encode_post
from trainer.transport.redis_server import free_port


def _get(url: str, *paths: str) -> tuple[Target, Workload]:
    target = Target.from_url(url)
    host = f"{target.host}:{target.port}"
    return target, Workload(endpoint="echo", requests=tuple(encode_get(host, p) for p in paths))


def test_closed_loop_counts_every_request_the_server_answered(
        echo_url: str, served: Callable[[], int]) -> None:
    before = served()
    target, work = _get(echo_url, "/ok")
    res = run_phase(target, work, LoadShape(duration_s=0.5, connections=4))
    ep = res.endpoint("echo")
    assert ep.statuses == {200: ep.answers} and ep.answers > 4
    assert served() - before == ep.answers == ep.latency.total
    assert res.in_flight_at_end == 0 and res.dropped == 0
    assert res.connections_opened == 4 and res.processes == 1
    s = res.summary("echo")
    assert s["requests"] == s["ok"] == ep.answers
    assert 0 < s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"]


def test_statuses_and_retry_after_are_counted_per_status(echo_url: str) -> None:
    target, work = _get(echo_url, "/status/200", "/status/404", "/status/503",
                        "/status/429")
    res = run_phase(target, work, LoadShape(duration_s=0.5, connections=3))
    ep = res.endpoint("echo")
    assert set(ep.statuses) == {200, 404, 503, 429}
    # Requests go out in turn over the cycle and every one is answered.
    assert max(ep.statuses.values()) - min(ep.statuses.values()) <= 1
    assert ep.retry_after == {503: ep.statuses[503]}
    assert ep.ok == ep.statuses[200]
    s = res.summary("echo")
    assert s["errors_by_status"] == {"404": ep.statuses[404], "429": ep.statuses[429],
                                     "503": ep.statuses[503]}
    assert s["retry_after_by_status"] == {"503": ep.statuses[503]}


def test_chunked_answers_are_framed(echo_url: str) -> None:
    target, work = _get(echo_url, "/chunked", "/ok")
    res = run_phase(target, work, LoadShape(duration_s=0.3, connections=2))
    ep = res.endpoint("echo")
    assert ep.connection_errors == {} and ep.statuses == {200: ep.answers} and ep.answers > 2


def test_open_loop_latency_counts_from_the_schedule(echo_url: str) -> None:
    # The server holds its loop 30 ms per request (~33/s) while 60 arrive per second for
    # 1 s: requests queue in the server, and the last ones wait about a second for it.
    target, work = _get(echo_url, "/block/30")
    res = run_phase(target, work, LoadShape(duration_s=1.0, connections=2, rate=60,
                                            max_connections=200, drain_s=30))
    ep = res.endpoint("echo")
    assert ep.answers == 60 and res.dropped == 0
    # 60 × 30 ms of service take 1.8 s, the last arrival was scheduled at 0.98 s.
    assert ep.latency.max_s >= 0.6
    # Answers waited for the ones ahead: the median is far above one service time.
    assert ep.latency.percentile_ms(50) >= 150
    assert res.connections_opened > 2  # busy connections made it open more


def test_open_loop_schedule_sleeps_instead_of_spinning(
        echo_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # 2,000 arrivals/s for 0.5 s: the schedule wakes at most once per timer tick (1 ms)
    # and sends every arrival then due; it once re-armed sub-millisecond timers that the
    # event loop fires at once, spinning a whole core between arrivals.
    ticks = 0
    real = engine._Phase._tick

    def counted(self: Any) -> None:
        nonlocal ticks
        ticks += 1
        real(self)

    monkeypatch.setattr(engine._Phase, "_tick", counted)
    target, work = _get(echo_url, "/ok")
    res = run_phase(target, work, LoadShape(duration_s=0.5, connections=8, rate=2000,
                                            max_connections=64, drain_s=5))
    ep = res.endpoint("echo")
    assert ep.answers + res.dropped == 1000 and ep.answers > 500
    assert ticks <= 0.5 / engine.TICK_S + 50


def test_open_loop_drops_arrivals_beyond_the_connection_cap(echo_url: str) -> None:
    target, work = _get(echo_url, "/block/30")
    res = run_phase(target, work, LoadShape(duration_s=1.0, connections=1, rate=50,
                                            max_connections=1, drain_s=10))
    ep = res.endpoint("echo")
    assert ep.answers + res.dropped == 50
    assert res.dropped > 0 and res.connections_opened == 1


def test_refused_connections_are_counted_not_raised() -> None:
    target = Target("127.0.0.1", free_port())
    work = Workload(endpoint="x", requests=(encode_post("h", "/", b"{}"),))
    res = run_phase(target, work, LoadShape(duration_s=0.2, connections=2, drain_s=1))
    ep = res.endpoint("x")
    assert ep.answers == 0
    assert ep.connection_errors.get("ConnectionRefusedError", 0) >= 2
    assert res.summary("x")["errors_by_status"]["ConnectionRefusedError"] >= 2
