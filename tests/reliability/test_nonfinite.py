"""Never serve a broken policy: an update whose loss or weights become NaN/inf is not
published (the last good version stays current, with a metric and a log line), and an
API replica refuses to load a published blob with non-finite weights."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import torch

from policy.checkpoint import init_policy, policy_to_bytes
from policy.config import PolicyConfig
from policy.types import Transition
from trainer.online import TrainerService, TrainerSettings
from trainer.transport.bus import RedisStreamBus
from trainer.transport.keys import RedisKeys
from trainer.transport.publication import PublishedPolicies, nonfinite_parameters
from trainer.transport.redis_server import EmbeddedRedis

N_ITEMS = 30


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_url)
    yield c
    await c.aclose()


def _trainer(client: aioredis.Redis, tmp_path: Path, ns: str) -> TrainerService:
    s = TrainerSettings(redis_url="unused", namespace=ns, state_dir=tmp_path / "state",
                        num_items=N_ITEMS, max_len=8, update_every=8, flush_idle_s=0,
                        alpha_steps=4, consumer="t1", block_ms=10,
                        learner_options={"lr": 1e-2})
    keys = RedisKeys(ns)
    return TrainerService(s, RedisStreamBus(client, keys, consumer="t1"),
                          PublishedPolicies(client, keys), stats_client=client)


def _t(i: int, reward: float = 1.0) -> Transition:
    return Transition(event_id=f"nf{i}", user_id=i % 4, history=(i % N_ITEMS, 2),
                      action=(5 * i) % N_ITEMS, reward=reward, done=False,
                      propensity=0.1, policy_version=1, source="theta")


def _sample(trainer: TrainerService, name: str, **labels: str) -> float:
    value = trainer.metrics.registry.get_sample_value(name, labels or None)
    assert value is not None, name
    return float(value)


async def _feed(trainer: TrainerService, events: list[Transition]) -> None:
    for t in events:
        assert await trainer.bus.publish(t) is not None
    for _ in range(10):
        if not await trainer.step(await trainer.bus.read(64, 10)):
            break


async def test_update_with_infinite_loss_is_not_published(
        client: aioredis.Redis, tmp_path: Path, redis_namespace: str,
        caplog: pytest.LogCaptureFixture) -> None:
    trainer = _trainer(client, tmp_path, redis_namespace)
    await trainer.setup()
    reg = trainer.policies
    await _feed(trainer, [_t(i) for i in range(8)])
    assert await reg.current_version() == 2
    good = await reg.load(2)
    # A finite reward the API accepts whose square float32 cannot hold: the loss is inf.
    with caplog.at_level(logging.ERROR, logger="trainer.online"):
        await _feed(trainer, [_t(i, reward=1e30) for i in range(8, 16)])
    assert await reg.current_version() == 2 and trainer.state.version == 2
    assert _sample(trainer, "ialp_trainer_rejected_updates_total",
                   reason="nonfinite_loss") == 1
    assert _sample(trainer, "ialp_trainer_events_rejected_total") == 8
    assert "update rejected (nonfinite_loss" in caplog.text
    # The poisoned batch left the durable buffer and was not counted as learned.
    assert await trainer.bus.buffered() == []
    assert (await trainer.bus.stats())["events_learned"] == 8
    # Learning continues from the last good weights.
    await _feed(trainer, [_t(i) for i in range(16, 24)])
    assert await reg.current_version() == 3
    latest = await reg.load(3)
    assert nonfinite_parameters(latest) == []
    assert latest.metadata["parent_version"] == 2 and latest.metadata["events_learned"] == 16
    assert latest.beta is not None and good.beta is not None
    moved = any(not torch.equal(a, b) for a, b in zip(
        latest.beta.state_dict().values(), good.beta.state_dict().values(), strict=True))
    assert moved


async def test_a_broken_learner_is_rebuilt_not_fed_the_data(
        client: aioredis.Redis, tmp_path: Path, redis_namespace: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """A NaN inside the learner (not in the data) makes every transition fail on its
    own: the trainer rebuilds the learner from the last published version and learns the
    batch, instead of quarantining honest events."""
    trainer = _trainer(client, tmp_path, redis_namespace)
    await trainer.setup()
    theta = trainer.learner.theta  # the frozen θ the ap learner mixes with
    with torch.no_grad():
        next(theta.parameters()).fill_(math.nan)
    with caplog.at_level(logging.ERROR, logger="trainer.online"):
        await _feed(trainer, [_t(i) for i in range(8)])
    assert "rebuilding the learner from version 1" in caplog.text
    assert _sample(trainer, "ialp_trainer_rejected_updates_total",
                   reason="nonfinite_learner") == 1
    assert await trainer.policies.current_version() == 2
    assert nonfinite_parameters(await trainer.policies.load(2)) == []
    assert (await trainer.bus.stats())["events_learned"] == 8
    assert await client.xlen(trainer.bus.keys.dead_letter) == 0


async def test_policy_with_nonfinite_weights_is_never_published(
        client: aioredis.Redis, tmp_path: Path, redis_namespace: str,
        caplog: pytest.LogCaptureFixture) -> None:
    trainer = _trainer(client, tmp_path, redis_namespace)
    await trainer.setup()
    # Weights that turn non-finite in the update itself (the loss was finite): poison
    # the learner's parameters right after its optimizer step.
    learner = trainer.learner
    step = learner.optimizer.step

    def poisoned_step(*args: Any, **kwargs: Any) -> Any:
        out = step(*args, **kwargs)
        with torch.no_grad():
            next(learner.net.parameters()).fill_(math.inf)
        return out

    learner.optimizer.step = poisoned_step
    with caplog.at_level(logging.ERROR, logger="trainer.online"):
        await _feed(trainer, [_t(i) for i in range(8)])
    assert await trainer.policies.current_version() == 1
    assert _sample(trainer, "ialp_trainer_rejected_updates_total",
                   reason="nonfinite_weights") >= 1
    assert "nonfinite_weights" in caplog.text and "keeping version 1" in caplog.text
    assert nonfinite_parameters(await trainer.policies.load(1)) == []


@pytest.fixture
def api(redis_server: EmbeddedRedis) -> Iterator[Any]:
    from app.main import create_app
    from tests.app.conftest import ThreadedServer, make_settings

    server = ThreadedServer(create_app(make_settings(redis_server.url,
                                                     num_items=N_ITEMS))).start()
    yield server
    server.stop()


async def test_api_refuses_to_load_a_nonfinite_blob(api: Any, redis_server: EmbeddedRedis,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    reg = PublishedPolicies(client, RedisKeys(api.svc.settings.namespace))
    try:
        cfg = PolicyConfig(num_items=N_ITEMS, max_len=10)
        good = init_policy(cfg, seed=1)
        good.version = await reg.next_version()
        await reg.publish(good, policy_to_bytes(good))
        async with httpx.AsyncClient(timeout=10) as http:
            async def served() -> int:
                return int((await http.get(f"{api.url}/v1/policy")).json()["version"])

            for _ in range(200):
                if await served() == good.version:
                    break
                await _sleep()
            assert await served() == good.version
            bad = init_policy(cfg, seed=2)
            with torch.no_grad():
                next(bad.theta.parameters())[0] = math.inf
            bad.version = await reg.next_version()
            with caplog.at_level(logging.ERROR, logger="app.policy_holder"):
                await reg.publish(bad, policy_to_bytes(bad))
                text = ""
                for _ in range(200):
                    text = (await http.get(f"{api.url}/metrics")).text
                    if re.search(r"^ialp_policy_rejected_total 1\.0$", text, re.M):
                        break
                    await _sleep()
            assert re.search(r"^ialp_policy_rejected_total 1\.0$", text, re.M), text[-500:]
            assert f"version {bad.version} has non-finite values" in caplog.text
            assert await served() == good.version
            rec = await http.post(f"{api.url}/v1/recommend",
                                  json={"user_id": 1, "history": [1, 2], "k": 2})
            assert rec.status_code == 200 and rec.json()["policy_version"] == good.version
    finally:
        await client.aclose()


async def _sleep() -> None:
    import asyncio

    await asyncio.sleep(0.05)
