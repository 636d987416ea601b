"""GenEE service mode against a real Redis and the real trainer loop: the published
versions restrict π_β to the GenEE pool, an iteration drops the worst pool item and adds a
new catalogue item, the pool survives a restart and never counts an event twice (a crash,
a rollback), settings and the items' texts are checked, and without the mode nothing is
restricted."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis

from ialp.cli import build_parser
from ialp.commands.trainer import _FIELDS
from policy.checkpoint import policy_to_bytes
from policy.types import Transition
from trainer.online import TrainerService, TrainerSettings
from trainer.online.genee import DEFAULT_IMPRESSIONS, item_vectors, read_item_texts
from trainer.transport.bus import RedisStreamBus
from trainer.transport.keys import RedisKeys
from trainer.transport.publication import PublishedPolicies

COLOURS = ("red", "blue", "green", "black", "white")
KINDS = ("wool jacket", "rain coat", "denim vest", "leather boots", "cotton scarf",
         "silk tie")
TEXTS = [f"{c} {k}" for k in KINDS for c in COLOURS]  # 30 items
N_ITEMS = len(TEXTS)


@pytest.fixture(scope="module")
def vectors(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The catalogue's text vectors from the packaged sentence encoder, encoded once."""
    pytest.importorskip("sentence_transformers")
    return item_vectors(TEXTS, tmp_path_factory.mktemp("vectors"))


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_url)
    yield c
    await c.aclose()


def _settings(tmp_path: Path, ns: str, vectors: np.ndarray | None, **kw: Any
              ) -> TrainerSettings:
    items = tmp_path / "items.txt"
    items.write_text("".join(f"{t}\n" for t in TEXTS))
    state = tmp_path / "state"
    if vectors is not None:
        # The module's encoding, placed where the trainer caches it: no second encoding.
        item_vectors(TEXTS, state, encode=lambda texts: vectors)
    base: dict[str, Any] = dict(
        redis_url="unused", namespace=ns, state_dir=state, num_items=N_ITEMS, max_len=8,
        update_every=6, flush_idle_s=0, alpha_steps=4, keep_versions=5, consumer="t1",
        block_ms=10, learner_options={"lr": 1e-2}, genee=True, genee_items=items,
        genee_options={"pool_size": 3, "drop": 1, "impressions": 6, "iterations": 5,
                       "seed": 0})
    base.update(kw)
    return TrainerSettings(**base)


def _trainer(client: aioredis.Redis, settings: TrainerSettings) -> TrainerService:
    keys = RedisKeys(settings.namespace)
    return TrainerService(settings, RedisStreamBus(client, keys, consumer=settings.consumer),
                          PublishedPolicies(client, keys, keep=settings.keep_versions),
                          stats_client=client)


def _t(i: int, action: int, reward: float) -> Transition:
    return Transition(event_id=f"ev{i}", user_id=i % 5, history=(i % N_ITEMS, 3),
                      action=action, reward=reward, done=False, propensity=0.2,
                      policy_version=1, source="beta" if i % 2 else "theta")


async def _drain(trainer: TrainerService, rounds: int = 20) -> None:
    for _ in range(rounds):
        if not await trainer.step(await trainer.bus.read(64, 10)):
            break


async def test_an_iteration_replaces_the_worst_pool_item_and_a_restart_resumes_it(
        client: aioredis.Redis, tmp_path: Path, redis_namespace: str,
        vectors: np.ndarray) -> None:
    settings = _settings(tmp_path, redis_namespace, vectors)
    trainer = _trainer(client, settings)
    await trainer.setup()
    reg = trainer.policies
    first = await reg.load(1)
    pool = first.beta_pool
    assert pool is not None and len(pool) == 3 and first.scheme == "ap"
    assert (await reg.meta(1))["beta_pool"] == list(pool)
    worst, good = pool[0], pool[1:]
    # One iteration (6 pool impressions): the worst item earns 0, the others 1.
    events = [(worst, 0.0), (good[0], 1.0), (good[1], 1.0)] * 2
    for i, (action, reward) in enumerate(events):
        await trainer.bus.publish(_t(i, action, reward))
    await _drain(trainer)
    assert await reg.current_version() == 2
    second = await reg.load(2)
    assert second.beta_pool is not None and len(second.beta_pool) == 3
    assert worst not in second.beta_pool and set(good) <= set(second.beta_pool)
    (added,) = set(second.beta_pool) - set(pool)
    assert 0 <= added < N_ITEMS
    entry = trainer.genee.pool.log[0]  # type: ignore[union-attr]
    assert entry["dropped"] == [worst] and entry["added"] == [added]
    assert entry["ctr"] == pytest.approx(4 / 6)
    assert second.metadata["genee_iteration"] == 2
    assert second.metadata["genee_last_ctr"] == pytest.approx(4 / 6)
    assert trainer.metrics.genee_iteration._value.get() == 2
    assert (await reg.meta(2))["beta_pool"] == list(second.beta_pool)

    # Part of the next iteration: two pool events among four others, one update.
    others = [a for a in range(N_ITEMS) if a not in second.beta_pool][:4]
    later = [(added, 1.0), (good[0], 0.5), *[(a, 1.0) for a in others]]
    for i, (action, reward) in enumerate(later, start=len(events)):
        await trainer.bus.publish(_t(i, action, reward))
    await _drain(trainer)
    assert await reg.current_version() == 3
    live = trainer.genee
    assert live is not None and live.pool.impressions == 2
    assert live.pool_ctr() == pytest.approx(0.75)
    saved = json.loads((settings.state_dir / "trainer_state.json").read_text())["genee"]
    assert saved["pool"] == live.pool.pool and saved["iteration"] == 2

    again = _trainer(client, settings)
    await again.setup()
    assert again.genee is not None
    assert again.genee.state_dict() == live.state_dict()  # pool, counts, log, generators
    assert again.genee.pool.iteration == 2 and again.genee.pool.impressions == 2
    assert await again.policies.current_version() == 3  # nothing republished
    assert again.state.genee is None  # held by the mode, written only into saved states


async def test_the_pool_never_counts_an_event_twice(
        client: aioredis.Redis, tmp_path: Path, redis_namespace: str,
        vectors: np.ndarray) -> None:
    # Updates are held back (publish_interval_s): a crash or a rollback relearns them.
    settings = _settings(tmp_path, redis_namespace, vectors, publish_interval_s=60,
                         genee_options={"pool_size": 3, "impressions": 100, "seed": 1})
    trainer = _trainer(client, settings)
    await trainer.setup()
    assert trainer.genee is not None
    pool = trainer.genee.items
    for i in range(6):
        await trainer.bus.publish(_t(i, pool[i % 3], 1.0))
    await trainer.bus.publish(_t(2, pool[2], 1.0))  # a duplicate delivery
    await trainer.step(await trainer.bus.read(64, 10))
    assert trainer.state.events_learned == 6 and await trainer.policies.current_version() == 1
    assert trainer.genee.pool.impressions == 6

    # A rollback while they are held back: relearned from the last publication's pool.
    reg = trainer.policies
    other = await reg.load(1)
    other.version = await reg.next_version()
    await reg.publish(other, policy_to_bytes(other), promote=True)
    await trainer.step([])
    assert trainer.state.events_learned == 6 and trainer.genee.pool.impressions == 6
    assert await reg.current_version() == other.version  # still held back

    # A crash before the publication: the restarted trainer relearns the six events
    # from the durable buffer, starting from the saved (empty) counts.
    again = _trainer(client, settings)
    await again.setup()
    assert again.genee is not None and again.genee.pool.impressions == 0
    await _drain(again)
    assert again.state.events_learned == 6 and again.genee.pool.impressions == 6
    latest = await reg.load(await reg.current_version() or 0)
    assert latest.version > other.version
    assert latest.beta_pool == pool and latest.metadata["genee_impressions"] == 6


async def test_without_the_mode_nothing_is_restricted(
        client: aioredis.Redis, tmp_path: Path, redis_namespace: str) -> None:
    trainer = _trainer(client, _settings(tmp_path, redis_namespace, None, genee=False))
    await trainer.setup()
    assert trainer.genee is None
    for i in range(6):
        await trainer.bus.publish(_t(i, i, 1.0))
    await _drain(trainer)
    reg = trainer.policies
    assert await reg.versions() == [1, 2]
    for version in (1, 2):
        assert (await reg.load(version)).beta_pool is None
        assert "beta_pool" not in await reg.meta(version)
    assert not any(k.startswith("genee") for k in (await reg.load(2)).metadata)


def test_settings_and_item_texts_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs scheme 'ap'"):
        TrainerSettings(genee=True, genee_items=tmp_path / "x.txt", scheme="ft")
    with pytest.raises(ValueError, match="needs genee_items"):
        TrainerSettings(genee=True)
    with pytest.raises(ValueError, match="unknown gee setting"):
        TrainerSettings(genee=True, genee_items=tmp_path / "x.txt",
                        genee_options={"pool": 3})
    assert TrainerSettings().genee is False  # off by default

    tsv = tmp_path / "items.tsv"
    tsv.write_text("title\titem_id\tbrand\nRed coat\tA1\tAcme\nBlue hat\tB2\t\n")
    assert read_item_texts(tsv, 2) == ["Red coat; Acme", "Blue hat"]
    with pytest.raises(ValueError, match="2 item texts, but the policy's catalogue has 3"):
        read_item_texts(tsv, 3)
    plain = tmp_path / "items.txt"
    plain.write_text("red coat\n\nblue hat\n")
    with pytest.raises(ValueError, match=r"items.txt:2: empty line"):
        read_item_texts(plain, 3)
    with pytest.raises(ValueError, match="does not exist"):
        read_item_texts(tmp_path / "missing.txt", 3)
    assert DEFAULT_IMPRESSIONS == 1000


def test_trainer_flags_reach_the_settings(tmp_path: Path) -> None:
    args = build_parser().parse_args([
        "trainer", "--genee", "--genee-items", str(tmp_path / "items.txt"),
        "--genee-options", '{"pool_size": 4, "impressions": 50}'])
    given = {f: getattr(args, f) for f in _FIELDS if getattr(args, f) is not None}
    settings = TrainerSettings(**given)
    assert settings.genee and settings.genee_items == tmp_path / "items.txt"
    assert settings.genee_options == {"pool_size": 4, "impressions": 50}
    off = build_parser().parse_args(["trainer"])
    assert {f for f in _FIELDS if getattr(off, f) is not None} == set()
