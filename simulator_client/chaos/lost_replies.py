"""Exactly-once under network faults between the trainer and Redis.

The real trainer process (``python -m ialp trainer``) talks to a real redis-server through
:class:`~tests.reliability.redis_proxy.RedisFaultProxy`; feedback events are enqueued
straight into the stream (the API side is not under test here) while armed faults drop
replies, cut connections or hold replies past the trainer's socket timeout. The verdict
comes from the trainer's learning audit (``IALP_AUDIT_LOG``): per event id, how often it
is inside the state the trainer would resume from — counters alone cannot show an event
lost and another learned twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import redis
import redis.asyncio as aioredis

from policy.types import Transition
from simulator_client.chaos.redis_proxy import Fault, RedisFaultProxy
from trainer.audit import learned_counts
from trainer.transport.bus import _COMMIT, _CONSUME, RedisStreamBus
from trainer.transport.keys import RedisKeys

ROOT = Path(__file__).resolve().parents[2]
N_ITEMS = 30
COMMIT_SHA = hashlib.sha1(_COMMIT.encode()).hexdigest().encode()
CONSUME_SHA = hashlib.sha1(_CONSUME.encode()).hexdigest().encode()


def runs_script(sha: bytes) -> Callable[[list[bytes]], bool]:
    """Match an EVALSHA of one script."""
    return lambda args: len(args) > 1 and args[1] == sha


# The commands of the trainer's cycle whose replies can be lost: what each one does.
TARGETS: dict[str, tuple[str, Callable[[list[bytes]], bool] | None]] = {
    "read (XREADGROUP)": ("XREADGROUP", None),
    "commit (EVALSHA commit)": ("EVALSHA", runs_script(COMMIT_SHA)),
    "trim (EVALSHA consume)": ("EVALSHA", runs_script(CONSUME_SHA)),
    "read blob / marker (GET)": ("GET", None),
    "version number (INCRBY)": ("INCRBY", None),
    "store version (SET)": ("SET", None),
    "publish version (EXEC)": ("EXEC", None),
    "announce (PUBLISH)": ("PUBLISH", None),
    "stats (HSET)": ("HSET", None),
    "read buffer (ZRANGE)": ("ZRANGE", None),
    "read payloads (HMGET)": ("HMGET", None),
    "claim (XAUTOCLAIM)": ("XAUTOCLAIM", None),
    "load script (SCRIPT)": ("SCRIPT", None),
    "open transaction (MULTI)": ("MULTI", None),
    "list version (RPUSH)": ("RPUSH", None),
    "read versions (LRANGE)": ("LRANGE", None),
    "drop old version (DEL)": ("DEL", None),
    "trim versions (LTRIM)": ("LTRIM", None),
    "buffer size check (ZCARD)": ("ZCARD", None),
}


def _transition(i: int, rng: np.random.Generator) -> Transition:
    hist = tuple(int(x) for x in rng.integers(0, N_ITEMS, size=int(rng.integers(1, 6))))
    return Transition(event_id=f"ev-{i:05d}", user_id=int(rng.integers(0, 50)),
                      history=hist, action=int(rng.integers(0, N_ITEMS)),
                      reward=float(rng.integers(1, 6)), done=bool(rng.random() < 0.1),
                      propensity=1.0 / N_ITEMS, policy_version=1, source="theta")


async def _produce(url: str, keys: RedisKeys, n: int, per_tick: int, tick_s: float,
                   seed: int) -> list[str]:
    client = aioredis.Redis.from_url(url)
    bus = RedisStreamBus(client, keys)
    rng = np.random.default_rng(seed)
    ids = []
    try:
        for i in range(n):
            t = _transition(i, rng)
            if await bus.publish(t) is not None:
                ids.append(t.event_id)
            if (i + 1) % per_tick == 0:
                await asyncio.sleep(tick_s)
    finally:
        await client.aclose()
    return ids


def _wait(pred: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return pred()


def run_scenario(
    tmp: Path, redis_port: int, faults: Sequence[Fault], *, n_events: int = 240,
    seed: int = 0, timeout_s: float = 90.0,
) -> dict[str, Any]:
    """One trainer behind a fault proxy; returns the counts of the verdict."""
    ns = f"lost-{uuid.uuid4().hex[:8]}"
    keys = RedisKeys(ns)
    direct = f"redis://127.0.0.1:{redis_port}/0"
    proxy = RedisFaultProxy(redis_port).start()
    audit = tmp / f"{ns}-audit.jsonl"
    log = tmp / f"{ns}-trainer.log"
    env = dict(os.environ)
    env.update({
        "IALP_REDIS_URL": proxy.url, "IALP_NAMESPACE": ns, "IALP_NUM_ITEMS": str(N_ITEMS),
        "IALP_MAX_LEN": "10", "IALP_SEED": "0", "IALP_TORCH_THREADS": "1",
        "OMP_NUM_THREADS": "1", "IALP_STATE_DIR": str(tmp / f"{ns}-state"),
        "IALP_CONSUMER": "lost-trainer", "IALP_UPDATE_EVERY": "16",
        "IALP_FLUSH_IDLE_S": "0.5", "IALP_BLOCK_MS": "100", "IALP_REDIS_TIMEOUT_S": "1.0",
        "IALP_CLAIM_EVERY_S": "0.5", "IALP_CLAIM_IDLE_MS": "2000",
        "IALP_AUDIT_LOG": str(audit), "IALP_LEARNER_OPTIONS": '{"lr": 0.01}'})
    r = redis.Redis.from_url(direct)
    with log.open("ab") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "ialp", "trainer"], cwd=ROOT,
                                stdout=fh, stderr=subprocess.STDOUT, env=env)
    started = time.monotonic()
    try:
        if not _wait(lambda: r.exists(keys.policy_current) == 1, 60):
            raise RuntimeError(f"trainer did not start; see {log}")
        for f in faults:  # counted from now: the faults land mid-stream
            proxy.arm(f)
        accepted = asyncio.run(_produce(direct, keys, n_events, per_tick=8, tick_s=0.05,
                                        seed=seed))

        def drained() -> bool:
            stats = {(k.decode() if isinstance(k, bytes) else k): int(v)
                 for k, v in r.hgetall(keys.trainer_stats).items()}
            pending = r.xpending(keys.stream, "trainer")["pending"]
            return (stats.get("events_learned", 0) >= len(accepted)
                    and r.zcard(keys.trainer_buffer) == 0 and pending == 0)

        recovered = _wait(drained, timeout_s)
        alive = proc.poll() is None
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proxy.stop()
    learned, rejected = learned_counts(audit) if audit.is_file() else ({}, {})
    stats = {(k.decode() if isinstance(k, bytes) else k): int(v)
                 for k, v in r.hgetall(keys.trainer_stats).items()}
    r.close()
    return {
        "faults": [f.label or f"{f.action} {f.command}" for f in faults],
        "fired": list(proxy.fired),
        "accepted": len(accepted),
        "learned_once": sum(1 for e in accepted if learned.get(e, 0) == 1),
        "learned_twice": sum(1 for e in accepted if learned.get(e, 0) > 1),
        "lost": sum(1 for e in accepted if learned.get(e, 0) == 0),
        "rejected": sum(rejected.values()),
        "events_learned_counter": stats.get("events_learned", 0),
        "drained": recovered,
        "trainer_alive": alive,
        "seconds": round(time.monotonic() - started, 1),
        "commands_seen": dict(proxy.counts),
        "log": str(log),
    }


def fault(target: str, action: str, nth: int = 3) -> Fault:
    """The fault ``action`` on the ``nth`` command of ``target`` (a key of TARGETS)."""
    command, match = TARGETS[target]
    return Fault(command=command, nth=nth, action=action, match=match,
                 label=f"{action}: {target} #{nth}")


def faults_for(target: str, action: str, nth: int = 3) -> list[Fault]:
    """The faults of one scenario. The buffer is read (ZRANGE) only at start-up and when
    the trainer resynchronises after an error, so that target is hit in the resync that
    a lost commit reply causes."""
    if target in ("read buffer (ZRANGE)", "read payloads (HMGET)"):
        return [fault("commit (EVALSHA commit)", "drop_reply", nth), fault(target, action, 1)]
    if target == "claim (XAUTOCLAIM)":  # twice a second: the first one after arming
        return [fault(target, action, 1)]
    return [fault(target, action, nth)]
