"""One hostile event never costs the honest ones: a batch whose loss is not finite is
split until the offending transitions are found; they go to the dead-letter stream with
the reason, the rest is learned, published and trimmed, and the lag drains."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from policy.types import Transition
from trainer.audit import learned_counts
from trainer.online import TrainerService, TrainerSettings
from trainer.transport.bus import RedisStreamBus
from trainer.transport.keys import RedisKeys
from trainer.transport.publication import PublishedPolicies, nonfinite_parameters

N_ITEMS = 30


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_url)
    yield c
    await c.aclose()


def _t(i: int, reward: float = 1.0) -> Transition:
    return Transition(event_id=f"q{i}", user_id=i % 4, history=(i % N_ITEMS, 2),
                      action=(7 * i) % N_ITEMS, reward=reward, done=False,
                      propensity=0.1, policy_version=1, source="theta")


async def test_hostile_rewards_are_quarantined_and_honest_ones_learned(
        client: aioredis.Redis, tmp_path: Path, redis_namespace: str) -> None:
    audit = tmp_path / "audit.jsonl"
    s = TrainerSettings(redis_url="unused", namespace=redis_namespace,
                        state_dir=tmp_path / "state", num_items=N_ITEMS, max_len=8,
                        update_every=16, flush_idle_s=0, consumer="q1", block_ms=10,
                        learner_options={"lr": 1e-2}, audit_log=audit)
    keys = RedisKeys(redis_namespace)
    trainer = TrainerService(s, RedisStreamBus(client, keys, consumer="q1"),
                             PublishedPolicies(client, keys), stats_client=client)
    await trainer.setup()
    hostile = {5, 21, 40}  # 3 of 48: finite rewards whose square float32 cannot hold
    events = [_t(i, 1e30 if i in hostile else float(1 + i % 5)) for i in range(48)]
    for t in events:
        assert await trainer.bus.publish(t) is not None
    for _ in range(10):
        if not await trainer.step(await trainer.bus.read(64, 10)):
            break
    stats = await trainer.bus.stats()
    assert stats["events_learned"] == 45 and trainer.state.events_learned == 45
    assert await trainer.bus.buffered_count() == 0 and trainer.buffer == []
    dead = await client.xrange(keys.dead_letter)
    assert sorted(f[b"event_id"].decode() for _, f in dead) == ["q21", "q40", "q5"]
    assert all(f[b"reason"].startswith(b"nonfinite_loss") for _, f in dead)
    learned, rejected = learned_counts(audit)
    honest = {f"q{i}" for i in range(48) if i not in hostile}
    assert set(learned) == honest and set(learned.values()) == {1}
    assert set(rejected) == {"q5", "q21", "q40"}
    latest = await trainer.policies.load(int(await trainer.policies.current_version()))
    assert nonfinite_parameters(latest) == []
    assert latest.metadata["events_learned"] == 45
