"""Default reward for silent decisions, and the embedded redis-server start-up path."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import redis

from app.settings import ServiceSettings
from trainer.transport.bus import transition_from_json
from trainer.transport.keys import RedisKeys
from trainer.transport.redis_server import ensure_embedded_redis, free_port, ping

from .conftest import AUTH, ThreadedServer, make_settings


def test_default_reward_learns_silent_decisions_once(
        http: httpx.Client, serve: Callable[[ServiceSettings], ThreadedServer],
        module_redis: str) -> None:
    srv = serve(make_settings(module_redis, default_reward=-0.5, default_reward_after_s=0.3,
                              default_reward_sweep_s=0.05))
    keys = RedisKeys(srv.svc.settings.namespace)
    r = redis.Redis.from_url(module_redis)
    answered, silent = (http.post(f"{srv.url}/v1/recommend",
                                  json={"user_id": u, "history": [u], "k": 2}).json()
                        for u in (1, 2))
    fb = http.post(f"{srv.url}/v1/feedback", json={
        "event_id": answered["event_id"], "item_id": answered["items"][1], "reward": 3.0},
        headers=AUTH)
    assert fb.status_code == 202
    deadline = time.monotonic() + 15
    while r.xlen(keys.stream) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # a few more sweeps: nothing else may arrive
    events = [transition_from_json(e[1][b"t"]) for e in r.xrange(keys.stream)]
    assert [(t.event_id, t.reward) for t in events] == [
        (answered["event_id"], 3.0), (silent["event_id"], -0.5)]
    assert events[1].action == silent["items"][0]
    assert events[1].propensity == silent["propensities"][0]
    late = http.post(f"{srv.url}/v1/feedback", json={
        "event_id": silent["event_id"], "item_id": silent["items"][0], "reward": 5.0},
        headers=AUTH)
    assert late.json()["status"] == "duplicate"
    assert "ialp_default_rewards_total 1.0" in http.get(f"{srv.url}/metrics").text


def test_without_a_redis_url_an_embedded_server_is_started_and_shared(
        http: httpx.Client, serve: Callable[[ServiceSettings], ThreadedServer],
        tmp_path: Path) -> None:
    port = free_port()
    settings = make_settings("unused", embedded_redis_port=port,
                             embedded_redis_dir=tmp_path / "redis")
    settings.redis_url = None
    srv = serve(settings)
    assert srv.svc.embedded is not None and ping("127.0.0.1", port)
    event = http.post(f"{srv.url}/v1/recommend", json={"user_id": 0, "history": [1]}).json()
    assert event["decision_recorded"] is True
    # A second process (here: a second call) reuses the running server.
    url, started = ensure_embedded_redis(tmp_path / "other", port)
    assert started is None and url.endswith(f":{port}/0")
    assert (tmp_path / "redis" / "appendonlydir").is_dir() or \
        (tmp_path / "redis" / "appendonly.aof").is_file()
    srv.stop()
    assert not ping("127.0.0.1", port)  # the owner stopped it on shutdown
