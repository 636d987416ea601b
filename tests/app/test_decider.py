"""The decider process (app.decider) behind a real service over HTTP and a real Redis:
same draws as the in-process sampler, decisions recorded, hot swaps reach it, and the
service keeps answering when the child dies."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable

import httpx
import numpy as np
import pytest
import redis

from app.settings import ServiceSettings
from policy.checkpoint import init_policy
from policy.config import PolicyConfig
from trainer.transport.keys import RedisKeys

from .conftest import ThreadedServer, make_settings
from .test_api import _publish, _wait_for


def _batches(http: httpx.Client, srv: ThreadedServer, where: str) -> float:
    metrics = http.get(f"{srv.url}/metrics").text
    line = f'ialp_recommend_batches_total{{where="{where}"}}'
    return sum(float(x.split()[-1]) for x in metrics.splitlines() if x.startswith(line))


def _call(http: httpx.Client, srv: ThreadedServer, user: int, history: list[int]) -> dict:
    resp = http.post(f"{srv.url}/v1/recommend",
                     json={"user_id": user, "history": history, "k": 1})
    assert resp.status_code == 200, resp.text
    out: dict = resp.json()
    return out


# bfloat16: the child freezes its copy with the parent's precision (a float32 child
# would log propensities that differ from the parent's in the third digit).
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_the_child_draws_what_the_sampler_draws_and_records_it(
        http: httpx.Client, serve: Callable[[ServiceSettings], ThreadedServer],
        module_redis: str, precision: str) -> None:
    srv = serve(make_settings(module_redis, decider=True, seed=11,
                              score_precision=precision))
    decider = srv.svc.recommender.decider
    assert decider is not None and decider.alive
    policy = srv.svc.holder.policy
    assert policy.precision == precision
    rdb = redis.Redis.from_url(module_redis)
    keys = RedisKeys(srv.svc.settings.namespace)
    # One call at a time: batches of one, drawn in order from the child's generator,
    # which the same seed reproduces here with the parent's own frozen sampler.
    rng = np.random.default_rng(decider.seed)
    for user in range(12):
        history = [(user * 7 + j) % 40 for j in range(1 + user % 5)]
        body = _call(http, srv, user, history)
        plan = policy.plan([history], k=[1], explore=[True], exclude=[()], user_ids=[user])
        fast = policy.fast_inputs(plan, rng)
        assert fast is not None
        items, props, ok = policy.sample_frozen(plan, fast)
        assert ok
        assert body["items"] == [int(items[0])]
        assert body["propensities"][0] == pytest.approx(float(props[0]), rel=1e-9)
        assert body["decision_recorded"] is True
        raw = rdb.get(keys.decision(body["event_id"]))
        assert raw is not None
        stored = json.loads(raw)
        assert stored["i"] == body["items"] and stored["h"] == history
        assert stored["u"] == user and stored["v"] == 0 and stored["s"] == ["theta"]
        assert stored["p"] == pytest.approx(body["propensities"])
    assert _batches(http, srv, "decider") == 12 and _batches(http, srv, "thread") == 0


def test_the_child_runs_at_the_configured_niceness(
        serve: Callable[[ServiceSettings], ThreadedServer], module_redis: str) -> None:
    """The event loop goes first when the cores are contended: the child is niced."""
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    for nice in (3, 0):
        srv = serve(make_settings(module_redis, decider=True, decider_nice=nice))
        decider = srv.svc.recommender.decider
        assert decider is not None and decider.alive and decider.pid is not None
        assert os.getpriority(os.PRIO_PROCESS, decider.pid) == min(19, mine + nice)


def test_k_above_one_is_decided_on_the_thread(
        http: httpx.Client, serve: Callable[[ServiceSettings], ThreadedServer],
        module_redis: str) -> None:
    srv = serve(make_settings(module_redis, decider=True))
    resp = http.post(f"{srv.url}/v1/recommend",
                     json={"user_id": 1, "history": [1, 2], "k": 3})
    assert resp.status_code == 200, resp.text
    assert len(set(resp.json()["items"])) == 3
    assert _batches(http, srv, "thread") == 1 and _batches(http, srv, "decider") == 0


def test_a_published_version_reaches_the_child(
        http: httpx.Client, serve: Callable[[ServiceSettings], ThreadedServer],
        module_redis: str) -> None:
    srv = serve(make_settings(module_redis, decider=True))
    (version,) = _publish(module_redis, srv.svc.settings.namespace,
                          [init_policy(PolicyConfig(num_items=40, max_len=10), seed=5)])
    _wait_for(lambda: http.get(f"{srv.url}/v1/policy").json()["version"] == version)
    before = _batches(http, srv, "decider")
    # The child loads the new version in the background; meanwhile the thread decides.
    deadline = time.monotonic() + 20
    while _batches(http, srv, "decider") == before:
        assert time.monotonic() < deadline, "the child never served the new version"
        assert _call(http, srv, 3, [1, 2, 3])["policy_version"] == version
        time.sleep(0.05)
    body = _call(http, srv, 3, [1, 2, 3])
    assert body["policy_version"] == version and body["decision_recorded"] is True


def test_the_service_answers_when_the_child_dies(
        http: httpx.Client, serve: Callable[[ServiceSettings], ThreadedServer],
        module_redis: str) -> None:
    srv = serve(make_settings(module_redis, decider=True))
    decider = srv.svc.recommender.decider
    assert _call(http, srv, 1, [1, 2])["decision_recorded"] is True
    assert decider.pid is not None
    os.kill(decider.pid, signal.SIGKILL)
    _wait_for(lambda: not decider.alive)
    threads = _batches(http, srv, "thread")
    for user in range(5):
        body = _call(http, srv, user, [user, user + 1])
        assert body["decision_recorded"] is True
    assert _batches(http, srv, "thread") == threads + 5
    assert http.get(f"{srv.url}/readyz").status_code == 200


def test_decider_off_keeps_the_thread(
        http: httpx.Client, serve: Callable[[ServiceSettings], ThreadedServer],
        module_redis: str) -> None:
    srv = serve(make_settings(module_redis, decider=False))
    assert srv.svc.recommender.decider is None
    assert _call(http, srv, 1, [1, 2])["decision_recorded"] is True
    assert _batches(http, srv, "thread") == 1


def test_a_child_that_cannot_start_leaves_the_thread_serving(
        http: httpx.Client, serve: Callable[[ServiceSettings], ThreadedServer],
        module_redis: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import app.decider

    # A child interpreter that exits at once: start-up goes on without the decider.
    monkeypatch.setattr(app.decider, "PYTHON", "/bin/false")
    srv = serve(make_settings(module_redis, decider=True))
    assert srv.svc.recommender.decider is None
    assert _call(http, srv, 1, [1, 2])["decision_recorded"] is True
    assert _batches(http, srv, "thread") == 1


def test_a_stuck_child_is_killed_its_batch_refused_and_the_thread_takes_over(
        http: httpx.Client, serve: Callable[[ServiceSettings], ThreadedServer],
        module_redis: str) -> None:
    srv = serve(make_settings(module_redis, decider=True, decider_timeout_s=0.5))
    decider = srv.svc.recommender.decider
    assert _call(http, srv, 1, [1, 2])["decision_recorded"] is True
    os.kill(decider.pid, signal.SIGSTOP)  # alive but never answers
    stuck = http.post(f"{srv.url}/v1/recommend", json={"user_id": 2, "history": [3], "k": 1})
    # Its decisions may still be written by the child: refused, never decided twice.
    assert stuck.status_code == 503 and "Retry-After" in stuck.headers
    assert "decider" in stuck.json()["detail"]
    assert not decider.alive
    _wait_for(lambda: decider._proc.poll() is not None)  # killed, not left stopped
    body = _call(http, srv, 3, [4, 5])
    assert body["decision_recorded"] is True
    assert _batches(http, srv, "thread") >= 1
