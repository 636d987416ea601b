"""The trainer through a Redis outage: the loop survives, a publication that failed is
retried without learning the batch twice, and learning resumes when Redis is back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from policy.types import Transition
from trainer.online import TrainerService, TrainerSettings
from trainer.transport.bus import RedisStreamBus
from trainer.transport.keys import RedisKeys
from trainer.transport.publication import PublishedPolicies
from trainer.transport.redis_server import EmbeddedRedis

N_ITEMS = 25


def _client(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5,
                                   retry=Retry(NoBackoff(), 0))


def _trainer(client: aioredis.Redis, tmp_path: Path) -> TrainerService:
    settings = TrainerSettings(
        redis_url="unused", namespace="outage", state_dir=tmp_path / "state",
        num_items=N_ITEMS, max_len=6, update_every=4, flush_idle_s=0, alpha_steps=10,
        consumer="t1", block_ms=20)
    keys = RedisKeys(settings.namespace)
    return TrainerService(settings, RedisStreamBus(client, keys, consumer="t1"),
                          PublishedPolicies(client, keys), stats_client=client)


def _t(i: int) -> Transition:
    return Transition(event_id=f"o{i}", user_id=1, history=(i % N_ITEMS,),
                      action=(3 * i) % N_ITEMS, reward=1.0, done=False)


async def _restart(server: EmbeddedRedis) -> EmbeddedRedis:
    return await asyncio.to_thread(
        EmbeddedRedis(server.data_dir, port=server.port).start)


async def _persist(client: aioredis.Redis) -> None:
    """Make sure the append-only file holds everything before a crash."""
    await client.bgrewriteaof()
    await asyncio.sleep(1.2)  # appendfsync everysec


async def test_failed_publication_is_retried_without_relearning(
        private_redis: EmbeddedRedis, tmp_path: Path) -> None:
    client = _client(private_redis.url)
    trainer = _trainer(client, tmp_path)
    await trainer.setup()
    for i in range(3):
        await trainer.bus.publish(_t(i))
    await trainer.step(await trainer.bus.read(10, 10))
    assert len(trainer.buffer) == 3
    await _persist(client)
    private_redis.kill()
    with pytest.raises((RedisConnectionError, OSError)):
        await trainer.update(list(trainer.buffer))
    # Learned once, out of the in-memory buffer, publication still due.
    assert trainer.state.updates == 1 and trainer.state.events_learned == 3
    assert trainer.buffer == []
    revived = await _restart(private_redis)
    try:
        await trainer.step([])
        reg = trainer.policies
        assert await reg.current_version() == 2
        assert (await reg.meta(2))["events_learned"] == 3
        assert await trainer.bus.buffered() == []
        assert trainer.state.updates == 1  # no second update of the same batch
        assert (await trainer.bus.stats())["events_learned"] == 3
    finally:
        await client.aclose()
        revived.stop()


async def test_the_loop_survives_an_outage_and_resumes(private_redis: EmbeddedRedis,
                                                       tmp_path: Path) -> None:
    client = _client(private_redis.url)
    trainer = _trainer(client, tmp_path)
    await trainer.setup()
    task = asyncio.create_task(trainer.run())

    async def until(pred: object, timeout: float = 20.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not pred():  # type: ignore[operator]
            assert not task.done(), task
            assert asyncio.get_running_loop().time() < deadline, "not reached"
            await asyncio.sleep(0.05)

    revived: EmbeddedRedis | None = None
    try:
        for i in range(4):
            await trainer.bus.publish(_t(i))
        await until(lambda: trainer.state.version == 2)
        assert trainer.state.events_learned == 4
        await _persist(client)
        private_redis.kill()
        await asyncio.sleep(1.5)  # several failed reads
        assert not task.done()
        revived = await _restart(private_redis)
        producer = _client(private_redis.url)
        bus = RedisStreamBus(producer, RedisKeys("outage"))
        for i in range(4, 8):
            await bus.publish(_t(i))
        await producer.aclose()
        await until(lambda: trainer.state.version == 3)  # published after the outage
        assert trainer.state.events_learned == 8
        check = _client(private_redis.url)
        assert int(await check.get(RedisKeys("outage").policy_current)) == 3
        await check.aclose()
    finally:
        trainer.stop()
        await asyncio.wait_for(task, 10)
        await client.aclose()
        if revived is not None:
            revived.stop()
