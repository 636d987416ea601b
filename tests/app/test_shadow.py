"""Shadow mode over real HTTP and a real Redis: the candidate decides beside the served
policy, users receive exactly what they would without it, and GET /v1/policy shows the
candidate with its agreement."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import redis.asyncio as aioredis
import torch

from app.settings import ServiceSettings
from policy.checkpoint import init_policy, policy_to_bytes
from policy.config import PolicyConfig
from trainer.transport.keys import RedisKeys
from trainer.transport.publication import PublishedPolicies

from .conftest import ThreadedServer, make_settings

N_ITEMS = 40


def _publish(url: str, namespace: str, *, favoured: list[int] | None, promote: bool) -> int:
    policy = init_policy(PolicyConfig(num_items=N_ITEMS, max_len=10), seed=3)
    if favoured is not None:
        with torch.no_grad():
            policy.theta.actor.score.out.bias[favoured] += 5.0

    async def go() -> int:
        client = aioredis.Redis.from_url(url)
        policies = PublishedPolicies(client, RedisKeys(namespace))
        policy.version = await policies.next_version()
        version = await policies.publish(policy, policy_to_bytes(policy), promote=promote)
        await client.aclose()
        return version

    return asyncio.run(go())


def _slates(http: httpx.Client, url: str, n: int) -> list[tuple[list[int], list[float]]]:
    out = []
    for u in range(n):  # one at a time: every request is its own forward pass
        r = http.post(f"{url}/v1/recommend",
                      json={"user_id": u, "history": [u % N_ITEMS, (3 * u) % N_ITEMS], "k": 3})
        assert r.status_code == 200, r.text
        out.append((r.json()["items"], r.json()["propensities"]))
    return out


def test_shadow_never_changes_what_users_receive(
        http: httpx.Client, module_redis: str,
        serve: Callable[[ServiceSettings], ThreadedServer]) -> None:
    plain = make_settings(module_redis, num_items=N_ITEMS, seed=11)
    shadowed = make_settings(module_redis, num_items=N_ITEMS, seed=11, shadow=True,
                             shadow_fraction=1.0)
    served = {}
    for s in (plain, shadowed):
        served[s.namespace] = _publish(module_redis, s.namespace, favoured=None, promote=True)
        # A candidate that disagrees a lot: most of its mass on items 30–39.
        _publish(module_redis, s.namespace, favoured=list(range(30, 40)), promote=False)
    a, b = serve(plain), serve(shadowed)
    for srv, ns in ((a, plain.namespace), (b, shadowed.namespace)):
        deadline = time.monotonic() + 5
        while http.get(f"{srv.url}/v1/policy").json()["version"] != served[ns]:
            assert time.monotonic() < deadline, "replica did not load the served version"
            time.sleep(0.1)
    info = http.get(f"{b.url}/v1/policy").json()
    assert info["candidate"] is not None and info["candidate"]["version"] == served[
        shadowed.namespace] + 1
    assert _slates(http, a.url, 60) == _slates(http, b.url, 60)

    def shadow_stats() -> dict[str, float]:
        stats: dict[str, float] = http.get(f"{b.url}/v1/policy").json()["candidate"]["shadow"]
        return stats

    deadline = time.monotonic() + 5
    while shadow_stats()["decisions"] + shadow_stats()["skipped"] < 60 \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    stats = shadow_stats()
    assert stats["decisions"] + stats["skipped"] == 60 and stats["decisions"] > 0
    # The candidate favours other items: it rarely agrees with the near-uniform served one.
    assert stats["top1_agreement"] < 0.5
    assert http.get(f"{a.url}/v1/policy").json()["candidate"]["shadow"] is None
    metrics = http.get(f"{b.url}/metrics").text
    assert "ialp_shadow_decisions_total" in metrics
