"""``POST /v1/feedback/batch`` over real HTTP and a real Redis: per-event answers in
order, retries that enqueue nothing twice, 422 naming the event's index, 401 without a
key, 503 with ``Retry-After`` while Redis is down (and a retry that loses nothing), and
sharded streams (every event in its shard's stream)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis

from app.schemas import FeedbackBatchResponse
from app.settings import ServiceSettings
from tests.app.conftest import AUTH, ThreadedServer, make_settings
from trainer.transport.bus import transition_from_json
from trainer.transport.redis_server import EmbeddedRedis
from trainer.transport.shards import Shards

Serve = Callable[[ServiceSettings], ThreadedServer]


def _recommend(http: httpx.Client, url: str, n: int, *, k: int = 2) -> list[dict[str, Any]]:
    out = []
    for user in range(n):
        resp = http.post(f"{url}/v1/recommend",
                         json={"user_id": user, "history": [1 + user % 30, 2], "k": k})
        assert resp.status_code == 200 and resp.json()["decision_recorded"]
        out.append(resp.json())
    return out


def _events(decisions: list[dict[str, Any]], reward: float = 1.0) -> list[dict[str, Any]]:
    return [{"event_id": d["event_id"], "item_id": d["items"][0], "reward": reward,
             "done": False} for d in decisions]


def _batch(http: httpx.Client, url: str, events: list[dict[str, Any]],
           headers: dict[str, str] | None = None) -> httpx.Response:
    return http.post(f"{url}/v1/feedback/batch", json={"events": events},
                     headers=AUTH if headers is None else headers)


def _stream_events(client: redis.Redis, stream: str) -> list[str]:
    return [transition_from_json(f[b"t"]).event_id for _, f in client.xrange(stream)]


def test_answers_per_event_in_order_and_a_retry_enqueues_nothing_twice(
        http: httpx.Client, serve: Serve, module_redis: str) -> None:
    settings = make_settings(module_redis)
    srv = serve(settings)
    decided = _recommend(http, srv.url, 6)
    events = _events(decided)
    missing = decided[5]["items"]  # an item of another event's slate, maybe not of 4's
    not_in_slate = next(i for i in range(40) if i not in decided[4]["items"])
    events[4]["item_id"] = not_in_slate
    events.insert(2, {"event_id": "0" * 32, "item_id": missing[0], "reward": 1.0})
    events.append(dict(events[0]))  # the same event twice in one batch

    resp = _batch(http, srv.url, events)
    assert resp.status_code == 200
    body = FeedbackBatchResponse.model_validate(resp.json())  # the declared schema
    got = [(r.event_id, r.status, r.code) for r in body.results]
    ids = [e["event_id"] for e in events]
    assert got == [(ids[0], "accepted", 202), (ids[1], "accepted", 202),
                   (ids[2], "unknown_event", 404), (ids[3], "accepted", 202),
                   (ids[4], "accepted", 202), (ids[5], "not_in_slate", 409),
                   (ids[6], "accepted", 202), (ids[7], "duplicate", 200)]
    assert body.counts == {"accepted": 5, "duplicate": 1, "unknown_event": 1,
                           "not_in_slate": 1}
    accepted = [r for r in body.results if r.status == "accepted"]
    assert all(r.stream_id for r in accepted) and not body.results[2].stream_id
    assert "unknown or expired" in (body.results[2].detail or "")
    assert str(not_in_slate) in (body.results[5].detail or "")

    # A retry of the whole batch (e.g. after a lost answer): nothing enqueued again.
    again = _batch(http, srv.url, events).json()
    assert [r["status"] for r in again["results"]] == [
        "duplicate", "duplicate", "unknown_event", "duplicate", "duplicate",
        "not_in_slate", "duplicate", "duplicate"]
    # And the single endpoint agrees: the event already had feedback.
    single = http.post(f"{srv.url}/v1/feedback", json=events[0], headers=AUTH)
    assert single.status_code == 200 and single.json()["status"] == "duplicate"

    keys = srv.svc.keys
    client = redis.Redis.from_url(module_redis)
    try:
        in_stream = _stream_events(client, keys.stream)
        assert sorted(in_stream) == sorted(r.event_id for r in accepted)  # once each
        assert int(client.get(keys.enqueued_total) or 0) == 5
        metrics = http.get(f"{srv.url}/metrics").text
        assert 'ialp_feedback_total{outcome="accepted"} 5.0' in metrics
        assert 'ialp_feedback_total{outcome="duplicate"} 8.0' in metrics  # 1 + 6 + single
    finally:
        client.close()


def test_422_names_the_event_index_and_401_without_a_key(
        http: httpx.Client, serve: Serve, module_redis: str) -> None:
    srv = serve(make_settings(module_redis, feedback_batch_max=4))
    decided = _recommend(http, srv.url, 3)
    events = _events(decided)

    bad = [dict(e) for e in events]
    bad[1]["reward"] = 99.0  # outside [-10, 10]
    bad[2]["item_id"] = 10_000  # not in the catalogue
    resp = _batch(http, srv.url, bad)
    assert resp.status_code == 422
    locs = [e["loc"] for e in resp.json()["detail"]]
    assert locs == [["body", "events", 1, "reward"], ["body", "events", 2, "item_id"]]

    shape = [dict(events[0]), {"event_id": events[1]["event_id"], "item_id": 1}]
    resp = _batch(http, srv.url, shape)  # pydantic's own check: reward missing
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "events", 1, "reward"]

    resp = _batch(http, srv.url, events * 2)  # 6 > feedback_batch_max
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "events"]
    assert _batch(http, srv.url, []).status_code == 422  # at least one event

    assert _batch(http, srv.url, events, headers={}).status_code == 401
    assert _batch(http, srv.url, events, headers={"X-API-Key": "wrong"}).status_code == 401
    # Nothing of the refused calls was enqueued: the events are still new.
    ok = _batch(http, srv.url, events).json()
    assert ok["counts"]["accepted"] == 3


def test_redis_down_is_503_with_retry_after_and_a_retry_loses_nothing(
        http: httpx.Client, serve: Serve, private_redis: EmbeddedRedis) -> None:
    srv = serve(make_settings(private_redis.url, redis_cooldown_s=0.2, retry_after_s=3))
    events = _events(_recommend(http, srv.url, 5))
    threading.Event().wait(1.5)  # the append-only file is synced every second
    private_redis.kill()
    resp = _batch(http, srv.url, events)
    assert resp.status_code == 503
    assert resp.headers["Retry-After"] == "3"
    assert "Redis is unreachable" in resp.json()["detail"]

    revived = EmbeddedRedis(private_redis.data_dir, port=private_redis.port).start()
    try:
        for _ in range(50):  # the client retries after Retry-After
            resp = _batch(http, srv.url, events)
            if resp.status_code == 200:
                break
            threading.Event().wait(0.1)
        assert resp.json()["counts"]["accepted"] == 5
        assert _batch(http, srv.url, events).json()["counts"]["duplicate"] == 5
    finally:
        revived.stop()


def test_sharded_streams_each_event_lands_in_its_shard(
        http: httpx.Client, serve: Serve, module_redis: str) -> None:
    settings = make_settings(module_redis, stream_shards=4)
    srv = serve(settings)
    decided = _recommend(http, srv.url, 24)
    events = _events(decided)
    body = _batch(http, srv.url, events).json()
    assert body["counts"]["accepted"] == 24
    shards = Shards(settings.namespace, 4)
    client = redis.Redis.from_url(module_redis)
    try:
        seen: dict[int, list[str]] = {}
        for s, keys in enumerate(shards.all_shard_keys()):
            ids = _stream_events(client, keys.stream)
            seen[s] = ids
            assert all(shards.of_event(e) == s for e in ids)
            # The stream ids answered are the shard stream's entries.
            entries = {e.decode() for e, _ in client.xrange(keys.stream)}
            answered = {r["stream_id"] for r in body["results"]
                        if shards.of_event(r["event_id"]) == s}
            assert answered == entries
        assert sorted(e for ids in seen.values() for e in ids) == sorted(
            e["event_id"] for e in events)
        assert sum(1 for ids in seen.values() if ids) >= 3  # the batch spans shards
    finally:
        client.close()
    again = _batch(http, srv.url, events).json()
    assert again["counts"]["duplicate"] == 24


def test_ab_counters_count_each_accepted_event_of_a_batch_once(
        http: httpx.Client, serve: Serve, module_redis: str) -> None:
    srv = serve(make_settings(module_redis, ab_arms={"mixed": 0.5, "random": 0.5}))
    decided = _recommend(http, srv.url, 20)
    events = _events(decided)
    for i, e in enumerate(events):
        e["reward"] = float(i % 3)
    assert _batch(http, srv.url, events).json()["counts"]["accepted"] == 20
    assert _batch(http, srv.url, events).json()["counts"]["duplicate"] == 20  # not counted
    report = http.get(f"{srv.url}/v1/ab").json()["arms"]
    for arm in ("mixed", "random"):
        sent = [e["reward"] for e, d in zip(events, decided, strict=True) if d["arm"] == arm]
        assert sent, arm  # 20 users spread over both arms
        assert report[arm]["feedback"] == len(sent)
        assert report[arm]["mean_reward"] == pytest.approx(sum(sent) / len(sent))
