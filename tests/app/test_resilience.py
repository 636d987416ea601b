"""Redis outages, micro-batching and the atomic policy swap, over real HTTP."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from app.settings import ServiceSettings
from policy.checkpoint import init_policy
from policy.config import PolicyConfig
from policy.mixed import MixedPolicy
from policy.types import pad_histories
from trainer.transport.redis_server import EmbeddedRedis

from .conftest import AUTH, ThreadedServer, make_settings


def _rec(http: httpx.Client, url: str, history: list[int], k: int = 1) -> httpx.Response:
    return http.post(f"{url}/v1/recommend", json={"user_id": 3, "history": history, "k": k})


def test_redis_down_recommend_serves_feedback_503_then_recovers(
        http: httpx.Client, serve: Callable[[ServiceSettings], ThreadedServer],
        private_redis: EmbeddedRedis) -> None:
    srv = serve(make_settings(private_redis.url, redis_cooldown_s=0.2, retry_after_s=3))
    before = _rec(http, srv.url, [1, 2]).json()
    assert before["decision_recorded"] is True

    private_redis.kill()
    for _ in range(3):
        resp = _rec(http, srv.url, [1, 2, 3], k=2)
        assert resp.status_code == 200
        assert resp.json()["decision_recorded"] is False
        assert len(resp.json()["items"]) == 2
    fb = http.post(f"{srv.url}/v1/feedback", json={
        "event_id": before["event_id"], "item_id": before["items"][0], "reward": 1.0},
        headers=AUTH)
    assert fb.status_code == 503
    assert fb.headers["Retry-After"] == "3"
    assert "Redis is unreachable" in fb.json()["detail"]
    ready = http.get(f"{srv.url}/readyz")
    assert ready.status_code == 503 and ready.headers["Retry-After"] == "3"
    assert http.get(f"{srv.url}/healthz").status_code == 200
    assert http.get(f"{srv.url}/v1/policy").json()["trainer_lag"] is None
    metrics = http.get(f"{srv.url}/metrics").text
    assert 'ialp_feedback_total{outcome="unavailable"} 1.0' in metrics
    assert re.search(r"ialp_decision_store_errors_total [1-9]", metrics)

    # Same port, same data folder: the server comes back and so does feedback.
    revived = EmbeddedRedis(private_redis.data_dir, port=private_redis.port).start()
    try:
        ok = False
        for _ in range(50):
            event = _rec(http, srv.url, [4]).json()
            if event["decision_recorded"]:
                ok = True
                break
            threading.Event().wait(0.1)
        assert ok
        fb = http.post(f"{srv.url}/v1/feedback", json={
            "event_id": event["event_id"], "item_id": event["items"][0], "reward": 2.0},
            headers=AUTH)
        assert fb.status_code == 202
        assert http.get(f"{srv.url}/readyz").status_code == 200
    finally:
        revived.stop()


def _hist_batch_counts(text: str) -> tuple[float, float]:
    count = float(re.search(r"ialp_recommend_batch_size_count (\S+)", text).group(1))
    total = float(re.search(r"ialp_recommend_batch_size_sum (\S+)", text).group(1))
    return count, total


@pytest.mark.parametrize("batching", [True, False])
def test_concurrent_requests_share_forward_passes_only_when_batching(
        http: httpx.Client, serve: Callable[[ServiceSettings], ThreadedServer],
        module_redis: str, batching: bool) -> None:
    srv = serve(make_settings(module_redis, micro_batching=batching, batch_max_wait_ms=50,
                              batch_max_size=8))
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: _rec(http, srv.url, [i % 40, 1]), range(48)))
    assert all(r.status_code == 200 for r in results)
    assert len({r.json()["event_id"] for r in results}) == 48
    count, total = _hist_batch_counts(http.get(f"{srv.url}/metrics").text)
    assert total == 48
    if batching:
        assert count < 48  # several requests per forward pass
        assert total / count <= 8
    else:
        assert count == 48


def _ap(alpha: float, seed: int, version: int) -> MixedPolicy:
    cfg = PolicyConfig(num_items=40, max_len=10)
    return MixedPolicy(init_policy(cfg, seed=seed).theta, init_policy(cfg, seed=seed + 1).theta,
                       alpha=alpha, scheme="ap", version=version)


def test_swap_is_atomic_each_answer_comes_from_one_whole_policy(
        http: httpx.Client, serve: Callable[[ServiceSettings], ThreadedServer],
        module_redis: str) -> None:
    srv = serve(make_settings(module_redis, batch_max_wait_ms=1.0, batch_max_size=16,
                              policy_poll_s=60))
    policies = {100: _ap(0.2, 1, 100), 101: _ap(0.8, 7, 101)}
    srv.svc.holder.swap(policies[100])
    stop = threading.Event()

    def flip() -> None:
        i = 0
        while not stop.is_set():
            srv.svc.holder.swap(policies[100 + i % 2])
            i += 1
            stop.wait(0.002)

    flipper = threading.Thread(target=flip)
    flipper.start()
    rng = np.random.default_rng(0)
    histories = [list(rng.integers(0, 40, size=int(rng.integers(1, 12)))) for _ in range(160)]
    try:
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda h: _rec(http, srv.url, [int(x) for x in h]).json(),
                                    histories))
    finally:
        stop.set()
        flipper.join()
    seen = set()
    for hist, ans in zip(histories, answers, strict=True):
        policy = policies[ans["policy_version"]]
        seen.add(ans["policy_version"])
        assert ans["alpha"] == pytest.approx(policy.alpha)
        probs = policy.probs(pad_histories([hist], 10))[0]
        # The propensity is π̃(a|s) of exactly the version the answer names.
        assert ans["propensities"][0] == pytest.approx(probs[ans["items"][0]], rel=1e-6)
        assert ans["sources"][0] in ("theta", "beta")
    assert seen == {100, 101}
