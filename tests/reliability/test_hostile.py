"""A feedback stream with 1 % hostile rewards loses no honest event, and the lag drains.

Two layers, each tested with the real API and trainer processes: with the default reward
bounds the API refuses the hostile rewards (422) and never enqueues them; with bounds an
operator widened, they reach the trainer, whose quarantine parks exactly those
transitions in the dead-letter stream and learns every honest one once (the trainer's
learning audit is the verdict).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import redis

from simulator_client.chaos.processes import AUTH, Traffic, procs, recommend, wait_learned
from trainer.audit import learned_counts
from trainer.transport.keys import RedisKeys
from trainer.transport.redis_server import EmbeddedRedis, free_port

HOSTILE = 1e30  # finite: passes JSON validation; its square does not fit a float32


def _run(tmp_path: Path, redis_server: EmbeddedRedis, n: int, api_env: dict[str, str]
         ) -> tuple[list[str], list[str], dict[str, int], Path, redis.Redis, RedisKeys]:
    audit = tmp_path / "audit.jsonl"
    with procs(tmp_path, redis_server.url) as ps:
        url = ps.api("api", free_port(), **api_env)
        ps.trainer(IALP_AUDIT_LOG=audit)
        traffic = Traffic()
        honest: list[str] = []
        hostile: list[str] = []
        statuses: dict[int, int] = {}
        with httpx.Client(timeout=10) as http:
            for i in range(n):
                body = recommend(http, url, traffic, i % 40)
                bad = i % 100 == 37  # 1 %
                fb = http.post(f"{url}/v1/feedback", headers=AUTH, json={
                    "event_id": body["event_id"], "item_id": body["items"][0],
                    "reward": HOSTILE if bad else float(i % 5)})
                statuses[fb.status_code] = statuses.get(fb.status_code, 0) + 1
                if fb.status_code == 202:
                    (hostile if bad else honest).append(body["event_id"])
        r = redis.Redis.from_url(redis_server.url)
        wait_learned(ps, r, len(honest), timeout=120)
        ps.wait(lambda: r.zcard(ps.keys.trainer_buffer) == 0
                and r.xpending(ps.keys.stream, "trainer")["pending"] == 0, "lag drained")
        return honest, hostile, statuses, audit, r, ps.keys


@pytest.mark.slow
def test_default_bounds_refuse_hostile_rewards_at_the_edge(
        tmp_path: Path, redis_server: EmbeddedRedis) -> None:
    honest, hostile, statuses, audit, _r, _keys = _run(tmp_path, redis_server, 400, {})
    assert statuses == {202: 396, 422: 4}
    assert hostile == []
    learned, _ = learned_counts(audit)
    assert all(learned[e] == 1 for e in honest) and len(learned) == len(honest)


@pytest.mark.slow
def test_hostile_rewards_past_widened_bounds_are_quarantined_not_costly(
        tmp_path: Path, redis_server: EmbeddedRedis) -> None:
    honest, hostile, statuses, audit, r, keys = _run(
        tmp_path, redis_server, 400,
        {"IALP_REWARD_MIN": "-1e38", "IALP_REWARD_MAX": "1e38"})
    assert statuses == {202: 400} and len(hostile) == 4
    learned, rejected = learned_counts(audit)
    assert sorted(e for e in honest if learned[e] == 1) == sorted(honest)  # 0 honest lost
    assert not any(learned[e] for e in hostile)  # nothing hostile learned
    assert sorted(rejected) == sorted(hostile)
    dead = {f[b"event_id"].decode() for _, f in r.xrange(keys.dead_letter)}
    assert dead == set(hostile)
    stats = {k.decode(): int(v) for k, v in r.hgetall(keys.trainer_stats).items()}
    assert stats["events_learned"] == len(honest)
