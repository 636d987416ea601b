"""A/B arms over real HTTP and a real Redis: sticky bucketing, the baseline arms, a pinned
version, per-arm counts, and configuration errors that name the problem."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from pydantic import ValidationError

from app.ab import ABArms, ArmsError, parse_arms
from app.lifespan import build_ab
from app.settings import ServiceSettings
from policy.checkpoint import init_policy, policy_to_bytes
from policy.config import PolicyConfig
from trainer.transport.bus import transition_from_json
from trainer.transport.keys import RedisKeys
from trainer.transport.publication import PublishedPolicies

from .conftest import AUTH, ThreadedServer, make_settings

N_ITEMS = 40


def _publish(url: str, namespace: str, seeds: list[int]) -> list[int]:
    async def go() -> list[int]:
        client = aioredis.Redis.from_url(url)
        policies = PublishedPolicies(client, RedisKeys(namespace))
        out = []
        for seed in seeds:
            p = init_policy(PolicyConfig(num_items=N_ITEMS, max_len=10), seed=seed)
            p.version = await policies.next_version()
            out.append(await policies.publish(p, policy_to_bytes(p)))
        await client.aclose()
        return out

    return asyncio.run(go())


def test_bad_arms_are_refused_with_the_reason() -> None:
    for arms, why in [({"mixed": 0.5, "random": 0.4}, "sum to 1"),
                      ({"mixed": 0.5, "bandit": 0.5}, "unknown A/B arm 'bandit'"),
                      ({"random": 1.0}, "must include 'mixed'"),
                      ({"mixed": 1.2, "random": -0.2}, "positive share")]:
        with pytest.raises(ValidationError, match=why):
            ServiceSettings(ab_arms=arms)
    assert parse_arms({}) == []


def test_sticky_buckets_follow_the_shares() -> None:
    arms = ABArms(parse_arms({"mixed": 0.7, "popular": 0.2, "random": 0.1}),
                  num_items=N_ITEMS, salt="s1", sticky=True)
    counts = Counter(arms.assign(u, f"e{u}") for u in range(6000))
    for arm, share in (("mixed", 0.7), ("popular", 0.2), ("random", 0.1)):
        assert abs(counts[arm] / 6000 - share) < 0.025, counts
    assert {arms.assign(17, f"x{i}") for i in range(20)} == {arms.assign(17, "y")}
    other_salt = ABArms(arms.arms, num_items=N_ITEMS, salt="s2", sticky=True)
    assert [arms.assign(u, "") for u in range(50)] != [other_salt.assign(u, "") for u in
                                                        range(50)]
    per_request = ABArms(arms.arms, num_items=N_ITEMS, salt="s1", sticky=False)
    assert len({per_request.assign(17, f"x{i}") for i in range(40)}) > 1


def test_arms_over_http(http: httpx.Client, module_redis: str,
                        serve: Callable[[ServiceSettings], ThreadedServer]) -> None:
    settings = make_settings(module_redis, num_items=N_ITEMS, max_k=5,
                             ab_arms={"mixed": 0.4, "random": 0.3, "popular": 0.3},
                             ab_popularity_refresh_s=0.05,
                             # 600 calls in about a second: not a rate-limit test.
                             rate_limit_per_s=0)
    _publish(module_redis, settings.namespace, [0])
    srv = serve(settings)
    ab = srv.svc.ab
    exclude = [1, 2, 3]
    # Item 7 is what users like: every slate containing it gets reward 1 on it.
    seen: Counter[str] = Counter()
    rewards: dict[str, list[float]] = {"mixed": [], "random": [], "popular": []}
    for u in range(300):
        r = http.post(f"{srv.url}/v1/recommend",
                      json={"user_id": u, "history": [u % N_ITEMS], "k": 2,
                            "exclude": exclude})
        assert r.status_code == 200, r.text
        body = r.json()
        arm = body["arm"]
        assert arm == ab.assign(u, "")  # sticky: decided by the user id alone
        seen[arm] += 1
        assert not set(body["items"]) & set(exclude)
        if arm == "random":
            assert body["propensities"] == pytest.approx([1 / 37, 1 / 36])
            assert body["sources"] == ["random", "random"]
        item = 7 if 7 in body["items"] else body["items"][0]
        reward = 1.0 if item == 7 else 0.0
        fb = http.post(f"{srv.url}/v1/feedback", headers=AUTH, json={
            "event_id": body["event_id"], "item_id": item, "reward": reward})
        assert fb.status_code == 202, fb.text
        rewards[arm].append(reward)
    assert all(seen[a] > 50 for a in ("mixed", "random", "popular")), seen
    # The popular arm learned from everyone's feedback: item 7 leads its slates.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and ab.counts[7] == 0:
        time.sleep(0.05)
    user = next(u for u in range(1000, 2000) if ab.assign(u, "") == "popular")
    top = http.post(f"{srv.url}/v1/recommend",
                    json={"user_id": user, "history": [30], "k": 3}).json()
    assert top["arm"] == "popular" and top["items"][0] == 7
    assert top["propensities"] == [1.0, 1.0, 1.0]
    # The per-arm report matches what was sent.
    report = http.get(f"{srv.url}/v1/ab").json()
    for arm, values in rewards.items():
        row = report["arms"][arm]
        assert row["feedback"] == len(values)
        assert row["mean_reward"] == pytest.approx(sum(values) / len(values))
    assert "diff_to_mixed" in report["arms"]["random"]
    # Control-arm feedback reaches the stream tagged with its arm (the trainer skips it).
    r = redis.Redis.from_url(module_redis)
    sources = Counter(transition_from_json(f[b"t"]).source
                      for _, f in r.xrange(RedisKeys(settings.namespace).stream))
    r.close()
    assert sources["random"] == len(rewards["random"])
    assert sources["popular"] == len(rewards["popular"])
    metrics = http.get(f"{srv.url}/metrics").text
    assert 'ialp_ab_recommendations_total{arm="random"}' in metrics
    without = serve(make_settings(module_redis, num_items=N_ITEMS))
    assert http.get(f"{without.url}/v1/ab").status_code == 404


def test_pinned_version_arm(http: httpx.Client, module_redis: str,
                            serve: Callable[[ServiceSettings], ThreadedServer]) -> None:
    settings = make_settings(module_redis, num_items=N_ITEMS,
                             ab_arms={"mixed": 0.5, "version:1": 0.5})
    v1, v2 = _publish(module_redis, settings.namespace, [0, 1])
    srv = serve(settings)
    by_arm = {}
    for u in range(40):
        body = http.post(f"{srv.url}/v1/recommend",
                         json={"user_id": u, "history": [3], "k": 1}).json()
        by_arm.setdefault(body["arm"], set()).add(body["policy_version"])
    assert by_arm == {"mixed": {v2}, "version:1": {v1}}

    async def missing() -> None:
        client = aioredis.Redis.from_url(module_redis)
        policies = PublishedPolicies(client, RedisKeys(settings.namespace))
        try:
            await build_ab(make_settings(module_redis, ab_arms={"mixed": 0.5,
                                                                "version:99": 0.5}),
                           policies, await policies.load(v2))
        finally:
            await client.aclose()

    with pytest.raises(ArmsError, match=r"version:99.*not kept"):
        asyncio.run(missing())
