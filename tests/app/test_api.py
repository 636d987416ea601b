"""The REST API over real HTTP against a real Redis: serving, validation, feedback,
duplicates, unknown events, API key, policy endpoints, metrics, OpenAPI."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from app.settings import ServiceSettings
from policy.checkpoint import init_policy, policy_to_bytes
from policy.config import PolicyConfig
from policy.mixed import MixedPolicy
from trainer.transport.bus import transition_from_json
from trainer.transport.keys import RedisKeys
from trainer.transport.publication import PublishedPolicies

from .conftest import ThreadedServer, make_settings

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def server(serve: Callable[[ServiceSettings], ThreadedServer], module_redis: str
           ) -> ThreadedServer:
    return serve(make_settings(module_redis, api_key=KEY))


@pytest.fixture(scope="module")
def rdb(module_redis: str) -> redis.Redis:
    return redis.Redis.from_url(module_redis)


def _recommend(http: httpx.Client, server: ThreadedServer, **body: Any) -> httpx.Response:
    payload = {"user_id": 1, "history": [1, 2, 3], "k": 1, **body}
    return http.post(f"{server.url}/v1/recommend", json=payload)


def _feedback(http: httpx.Client, server: ThreadedServer, key: str | None = KEY,
              **body: Any) -> httpx.Response:
    headers = {"X-API-Key": key} if key is not None else {}
    return http.post(f"{server.url}/v1/feedback", json=body, headers=headers)


def _loc(resp: httpx.Response) -> list[list[Any]]:
    assert resp.status_code == 422, resp.text
    return [e["loc"] for e in resp.json()["detail"]]


def test_recommend_returns_a_recorded_slate(http: httpx.Client, server: ThreadedServer,
                                            rdb: redis.Redis) -> None:
    resp = _recommend(http, server, k=3, exclude=[4, 5])
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert len(body["items"]) == 3 and len(set(body["items"])) == 3
    assert not {4, 5} & set(body["items"])
    assert all(0 < p <= 1 for p in body["propensities"])
    assert body["policy_version"] == 0 and body["alpha"] == 0.0
    assert body["decision_recorded"] is True
    keys = RedisKeys(server.svc.settings.namespace)
    stored = json.loads(rdb.get(keys.decision(body["event_id"])))
    assert stored["i"] == body["items"] and stored["h"] == [1, 2, 3]
    assert stored["p"] == pytest.approx(body["propensities"])
    assert 0 < rdb.ttl(keys.decision(body["event_id"])) <= server.svc.settings.decision_ttl_s


@pytest.mark.parametrize(("body", "loc"), [
    ({"history": [1, 999]}, ["body", "history", 1]),
    ({"history": [-3]}, ["body", "history", 0]),
    ({"history": []}, ["body", "history"]),
    ({"history": list(range(31))}, ["body", "history"]),
    ({"k": 0}, ["body", "k"]),
    ({"k": 6}, ["body", "k"]),
    ({"exclude": [40]}, ["body", "exclude", 0]),
    ({"user_id": -1}, ["body", "user_id"]),
    ({"user_id": 2**64}, ["body", "user_id"]),
    ({"history": [10**30]}, ["body", "history", 0]),
    ({"history": "1,2"}, ["body", "history"]),
    ({"surprise": 1}, ["body", "surprise"]),
])
def test_recommend_validation_names_the_field(http: httpx.Client, server: ThreadedServer,
                                              body: dict[str, Any], loc: list[Any]) -> None:
    resp = _recommend(http, server, **body)
    assert loc in _loc(resp)
    assert all(e["msg"] for e in resp.json()["detail"])


def test_k_beyond_the_items_left_after_exclude_is_rejected(
        http: httpx.Client, serve: Callable[[ServiceSettings], ThreadedServer],
        module_redis: str) -> None:
    small = serve(make_settings(module_redis, num_items=6, max_k=5))
    resp = http.post(f"{small.url}/v1/recommend",
                     json={"user_id": 0, "history": [0], "k": 3, "exclude": [1, 2, 3, 4]})
    assert ["body", "k"] in _loc(resp)
    assert "2 recommendable items" in resp.json()["detail"][0]["msg"]


def test_unknown_item_message_says_what_is_wrong(http: httpx.Client,
                                                 server: ThreadedServer) -> None:
    detail = _recommend(http, server, history=[7, 123]).json()["detail"]
    assert detail[0]["msg"] == "unknown item id 123: the catalogue has ids 0..39"


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_reward_is_422_naming_reward(http: httpx.Client, server: ThreadedServer,
                                                raw: str) -> None:
    event = _recommend(http, server).json()
    content = (f'{{"event_id": "{event["event_id"]}", "item_id": {event["items"][0]}, '
               f'"reward": {raw}}}')
    resp = http.post(f"{server.url}/v1/feedback", content=content,
                     headers={"content-type": "application/json", "X-API-Key": KEY})
    assert ["body", "reward"] in _loc(resp)


def test_feedback_is_joined_enqueued_once_and_duplicates_reported(
        http: httpx.Client, server: ThreadedServer, rdb: redis.Redis) -> None:
    keys = RedisKeys(server.svc.settings.namespace)
    before = rdb.xlen(keys.stream)
    event = _recommend(http, server, k=2, history=[5, 6]).json()
    item = event["items"][1]
    first = _feedback(http, server, event_id=event["event_id"], item_id=item, reward=4.5,
                      done=True)
    assert first.status_code == 202, first.text
    assert first.json()["status"] == "accepted"
    again = _feedback(http, server, event_id=event["event_id"], item_id=item, reward=1.0)
    other_item = _feedback(http, server, event_id=event["event_id"],
                           item_id=event["items"][0], reward=1.0)
    for resp in (again, other_item):
        assert resp.status_code == 200 and resp.json()["status"] == "duplicate"
    assert rdb.xlen(keys.stream) == before + 1
    entry = rdb.xrange(keys.stream, "-", "+")[-1]
    assert entry[0].decode() == first.json()["stream_id"]
    t = transition_from_json(entry[1][b"t"])
    assert (t.event_id, t.action, t.reward, t.done) == (event["event_id"], item, 4.5, True)
    assert t.history == (5, 6) and t.user_id == 1
    assert t.propensity == pytest.approx(event["propensities"][1])
    assert t.policy_version == event["policy_version"]


def test_unknown_event_is_404_and_foreign_item_is_409(http: httpx.Client,
                                                      server: ThreadedServer) -> None:
    resp = _feedback(http, server, event_id="no-such-event", item_id=1, reward=1.0)
    assert resp.status_code == 404
    assert "unknown or expired event_id 'no-such-event'" in resp.json()["detail"]
    event = _recommend(http, server, k=1).json()
    foreign = next(i for i in range(40) if i not in event["items"])
    resp = _feedback(http, server, event_id=event["event_id"], item_id=foreign, reward=1.0)
    assert resp.status_code == 409
    assert f"item_id {foreign} was not recommended" in resp.json()["detail"]
    # The rejected call did not consume the event: real feedback is still accepted.
    ok = _feedback(http, server, event_id=event["event_id"], item_id=event["items"][0],
                   reward=0.0)
    assert ok.status_code == 202


def test_api_key_is_required_for_feedback_and_rollback(http: httpx.Client,
                                                       server: ThreadedServer) -> None:
    event = _recommend(http, server).json()
    body = {"event_id": event["event_id"], "item_id": event["items"][0], "reward": 1.0}
    assert _feedback(http, server, key=None, **body).status_code == 401
    assert _feedback(http, server, key="wrong", **body).status_code == 401
    assert http.post(f"{server.url}/v1/policy/rollback", json={}).status_code == 401
    # Recommend stays open.
    assert _recommend(http, server).status_code == 200
    assert _feedback(http, server, **body).status_code == 202


def test_health_ready_policy_and_metrics(http: httpx.Client, server: ThreadedServer) -> None:
    assert http.get(f"{server.url}/healthz").json()["status"] == "ok"
    ready = http.get(f"{server.url}/readyz")
    assert ready.status_code == 200 and ready.json()["redis"] is True
    info = http.get(f"{server.url}/v1/policy").json()
    assert info["version"] == 0 and info["scheme"] == "none" and info["num_items"] == 40
    assert info["trainer_lag"] >= 1  # feedback enqueued above, no trainer running
    text = http.get(f"{server.url}/metrics").text
    assert "ialp_recommend_batch_size_count" in text
    assert 'ialp_feedback_total{outcome="duplicate"} 2.0' in text
    assert 'ialp_http_request_duration_seconds_count{method="POST",route="/v1/recommend",' \
           'status="200"}' in text
    assert "ialp_policy_alpha 0.0" in text


def test_openapi_documents_examples_and_errors(http: httpx.Client,
                                               server: ThreadedServer) -> None:
    spec = http.get(f"{server.url}/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for name in ("RecommendRequest", "RecommendResponse", "FeedbackRequest", "PolicyInfo"):
        assert schemas[name].get("examples"), name
    fb = spec["paths"]["/v1/feedback"]["post"]["responses"]
    assert {"202", "200", "404", "409", "401", "422", "503"} <= set(fb)
    assert "/v1/noop" not in spec["paths"]


def _publish(url: str, namespace: str, policies: list[MixedPolicy]) -> list[int]:
    async def go() -> list[int]:
        client = aioredis.Redis.from_url(url)
        reg = PublishedPolicies(client, RedisKeys(namespace), keep=3)
        out = []
        for p in policies:
            p.version = await reg.next_version()
            out.append(await reg.publish(p, policy_to_bytes(p)))
        await client.aclose()
        return out

    return asyncio.run(go())


def _ap_policy(num_items: int, alpha: float, seed: int) -> MixedPolicy:
    cfg = PolicyConfig(num_items=num_items, max_len=10)
    theta = init_policy(cfg, seed=seed).theta
    beta = init_policy(cfg, seed=seed + 100).theta
    return MixedPolicy(theta, beta, alpha=alpha, scheme="ap",
                       metadata={"updates": seed, "events_learned": 10 * seed})


def _wait_for(pred: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


def test_published_versions_are_hot_swapped_and_rolled_back(
        http: httpx.Client, serve: Callable[[ServiceSettings], ThreadedServer],
        module_redis: str) -> None:
    srv = serve(make_settings(module_redis, api_key=KEY))
    ns = srv.svc.settings.namespace
    versions = _publish(module_redis, ns, [_ap_policy(40, a, s) for a, s in
                                           ((0.1, 1), (0.2, 2), (0.3, 3), (0.4, 4))])
    assert versions == [1, 2, 3, 4]
    _wait_for(lambda: http.get(f"{srv.url}/v1/policy").json()["version"] == 4)
    info = http.get(f"{srv.url}/v1/policy").json()
    assert info["alpha"] == pytest.approx(0.4) and info["scheme"] == "ap"
    assert info["kept_versions"] == [2, 3, 4] and info["updates"] == 4
    rec = _recommend(http, srv).json()
    assert rec["policy_version"] == 4 and rec["alpha"] == pytest.approx(0.4)
    assert set(rec["sources"]) <= {"theta", "beta"}

    headers = {"X-API-Key": KEY}
    back = http.post(f"{srv.url}/v1/policy/rollback", json={}, headers=headers)
    assert back.status_code == 200, back.text
    assert back.json()["version"] == 3 and back.json()["current_version"] == 3
    assert _recommend(http, srv).json()["policy_version"] == 3
    to2 = http.post(f"{srv.url}/v1/policy/rollback", json={"version": 2}, headers=headers)
    assert to2.json()["version"] == 2 and to2.json()["alpha"] == pytest.approx(0.2)
    gone = http.post(f"{srv.url}/v1/policy/rollback", json={"version": 1}, headers=headers)
    assert gone.status_code == 404 and "not kept" in gone.json()["detail"]
    metrics = http.get(f"{srv.url}/metrics").text
    assert "ialp_policy_version 2.0" in metrics


def test_a_new_replica_starts_from_the_current_version(
        http: httpx.Client, serve: Callable[[ServiceSettings], ThreadedServer],
        module_redis: str) -> None:
    settings = make_settings(module_redis)
    _publish(module_redis, settings.namespace, [_ap_policy(40, 0.7, 9)])
    srv = serve(settings)
    assert http.get(f"{srv.url}/v1/policy").json()["version"] == 1
    assert http.get(f"{srv.url}/v1/policy").json()["alpha"] == pytest.approx(0.7)


def test_a_hot_swapped_version_keeps_its_beta_pool(
        http: httpx.Client, serve: Callable[[ServiceSettings], ThreadedServer],
        module_redis: str) -> None:
    srv = serve(make_settings(module_redis))
    pool = [5, 9, 13, 21, 30]
    policy = _ap_policy(40, 1.0, 4)  # α = 1: every item comes from β
    policy.beta_pool = pool
    policy.metadata.update(genee_iteration=3, genee_last_ctr=0.5)
    (version,) = _publish(module_redis, srv.svc.settings.namespace, [policy])
    _wait_for(lambda: http.get(f"{srv.url}/v1/policy").json()["version"] == version)
    info = http.get(f"{srv.url}/v1/policy").json()
    assert info["beta_pool"] == pool
    assert info["genee"] == {"iteration": 3, "last_ctr": 0.5}
    for user in range(5):
        rec = _recommend(http, srv, user_id=user, k=3).json()
        assert set(rec["items"]) <= set(pool) and set(rec["sources"]) == {"beta"}


def test_noop_endpoint_parses_like_recommend(http: httpx.Client,
                                             server: ThreadedServer) -> None:
    ok = http.post(f"{server.url}/v1/noop", json={"user_id": 1, "history": [1, 2], "k": 1})
    assert ok.status_code == 200 and ok.json()["items"] == [1]
    assert http.post(f"{server.url}/v1/noop", json={"user_id": 1}).status_code == 422


def test_propensities_are_finite_probabilities(http: httpx.Client,
                                               server: ThreadedServer) -> None:
    for _ in range(5):
        body = _recommend(http, server, k=5).json()
        assert all(math.isfinite(p) and 0 < p <= 1 for p in body["propensities"])
