"""Redis memory stays bounded under a flood of anonymous recommendations: at most
``decision_cap`` decisions are kept (the oldest evicted first, in the same Lua call that
writes new ones), so ``used_memory`` stops growing once the cap is reached. The long
version is ``benchmarks/memory_flood.py``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis

from app.main import create_app
from tests.app.conftest import AUTH, ThreadedServer, make_settings
from trainer.transport.redis_server import EmbeddedRedis, free_port

CAP = 300
PER_DECISION_BOUND = 1500
"""Bytes one decision may cost in Redis (JSON of a 30-item history and a 5-item slate,
key, TTL and its index entry; measured about 600)."""


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis", port=free_port(), persistence=False).start()
    yield server
    server.stop()


def _flood(url: str, n: int, workers: int = 8) -> list[int]:
    def one(i: int) -> int:
        with httpx.Client(timeout=30) as http:
            codes = []
            for j in range(i, n, workers):
                codes.append(http.post(f"{url}/v1/recommend", json={
                    "user_id": j, "history": [(j + h) % 40 for h in range(30)],
                    "k": 5}).status_code)
            return codes.count(200)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, range(workers)))


def test_a_flood_of_recommendations_keeps_redis_memory_under_the_cap(
        own_redis: EmbeddedRedis) -> None:
    r = redis.Redis.from_url(own_redis.url)
    # No rate limit: the flood stands for many addresses; only the cap bounds memory.
    server = ThreadedServer(create_app(make_settings(
        own_redis.url, decision_cap=CAP, rate_limit_per_s=0.0))).start()
    ns = server.svc.settings.namespace
    try:
        empty = int(r.info("memory")["used_memory"])
        with httpx.Client(timeout=10) as http:
            first = http.post(f"{server.url}/v1/recommend",
                              json={"user_id": 1, "history": [1], "k": 1}).json()
        assert sum(_flood(server.url, CAP - 1)) == CAP - 1
        at_cap = int(r.info("memory")["used_memory"])
        assert CAP * 200 < at_cap - empty < CAP * PER_DECISION_BOUND
        assert sum(_flood(server.url, 8 * CAP)) == 8 * CAP
        after = int(r.info("memory")["used_memory"])
        # Eight times the cap sent, memory where it was once the cap was first reached.
        assert after - empty < CAP * PER_DECISION_BOUND, (empty, at_cap, after)
        assert after < at_cap + 64 * 1024, (at_cap, after)
        decisions = [k for k in r.scan_iter(f"{ns}:decision:*", count=1000)]
        assert len(decisions) == CAP == r.zcard(f"{ns}:decisions")
        with httpx.Client(timeout=10) as http:
            text = http.get(f"{server.url}/metrics").text
            evicted = re.search(r"^ialp_decisions_evicted_total (\S+)$", text, re.M)
            assert evicted and float(evicted.group(1)) == 8 * CAP
            # The newest decisions are the ones kept: feedback for one works; the
            # oldest were evicted and are answered 404 like expired ones.
            rec = http.post(f"{server.url}/v1/recommend",
                            json={"user_id": 1, "history": [1], "k": 1}).json()
            ok = http.post(f"{server.url}/v1/feedback", headers=AUTH, json={
                "event_id": rec["event_id"], "item_id": rec["items"][0], "reward": 1.0})
            assert ok.status_code == 202
            oldest = http.post(f"{server.url}/v1/feedback", headers=AUTH, json={
                "event_id": first["event_id"], "item_id": first["items"][0],
                "reward": 1.0})
            assert oldest.status_code == 404 and "at most the newest 300" in oldest.text
    finally:
        server.stop()
