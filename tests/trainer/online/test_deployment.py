"""Safe deployment with real processes and a real Redis: the promotion gate keeps a worse
candidate out and lets a better one in; a served version that hurts rewards is rolled
back by the trainer within the configured window.

Users reward items 0–9 (1) and nothing else (0). The served policy starts near uniform;
the "worse" candidate puts its mass on items 20–29, the "better" one on items 0–9.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import torch

from policy.checkpoint import init_policy, save_checkpoint
from policy.config import PolicyConfig
from simulator_client.chaos.processes import AUTH, N_ITEMS, ROOT, Procs
from trainer.transport.redis_server import EmbeddedRedis, free_port

ROLLBACK_MIN = 60
ROLLBACK_WINDOW = 200
ADMIN = {"X-API-Key": "deploy-admin-key"}


def _checkpoint(tmp: Path, name: str, favoured: range | None) -> Path:
    policy = init_policy(PolicyConfig(num_items=N_ITEMS, max_len=10), seed=0)
    if favoured is not None:
        with torch.no_grad():
            policy.theta.actor.score.out.bias[list(favoured)] += 4.0
    return save_checkpoint(policy, tmp / name)


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    server = EmbeddedRedis(tmp_path / "redis", port=free_port()).start()
    yield server.url
    server.stop()


def _event(http: httpx.Client, url: str, user: int) -> int:
    """One recommendation and its feedback; returns the version that decided."""
    rec = http.post(f"{url}/v1/recommend",
                    json={"user_id": user, "history": [user % N_ITEMS], "k": 1})
    assert rec.status_code == 200, rec.text
    body: dict[str, Any] = rec.json()
    item = int(body["items"][0])
    fb = http.post(f"{url}/v1/feedback", headers=AUTH, json={
        "event_id": body["event_id"], "item_id": item, "reward": 1.0 if item < 10 else 0.0})
    assert fb.status_code == 202, fb.text
    return int(body["policy_version"])


def _cli(ps: Procs, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "ialp", "policy", *args, "--json", "--redis-url",
         ps.redis_url, "--namespace", ps.ns], cwd=ROOT, capture_output=True, text=True,
        timeout=120)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _events(ps: Procs) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = _cli(ps, "events", "--count", "50")["events"]
    return events


def _drive_until(http: httpx.Client, url: str, ps: Procs, r: redis.Redis, done: Any,
                 what: str, *, start_user: int, limit: int = 1500) -> tuple[int, list[int]]:
    """Send events until ``done()``; returns (events sent, versions that decided)."""
    versions = []
    for i in range(limit):
        versions.append(_event(http, url, start_user + i))
        if i % 10 == 9 and done():
            return i + 1, versions
    raise AssertionError(f"{what} did not happen within {limit} events\n{ps.tails()}")


def _current(r: redis.Redis, ps: Procs) -> int:
    return int(r.get(ps.keys.policy_current) or -1)


def test_gate_and_rollback_with_real_processes(tmp_path: Path, redis_url: str) -> None:
    base = _checkpoint(tmp_path, "base", None)
    worse = _checkpoint(tmp_path, "worse", range(20, 30))
    better = _checkpoint(tmp_path, "better", range(0, 10))
    r = redis.Redis.from_url(redis_url)
    ps = Procs(tmp_path, redis_url)
    try:
        ps.trainer(IALP_CHECKPOINT=base, IALP_PROMOTION="gate", IALP_UPDATE_EVERY=10**6,
                   IALP_FLUSH_IDLE_S=0, IALP_GATE_MIN_SAMPLES=150, IALP_GATE_EVERY=40,
                   IALP_ROLLBACK_MIN_SAMPLES=ROLLBACK_MIN,
                   IALP_ROLLBACK_WINDOW=ROLLBACK_WINDOW)
        ps.wait(lambda: r.get(ps.keys.policy_current) is not None, "first version")
        served = _current(r, ps)
        url = ps.api("api", free_port(), IALP_CHECKPOINT=base,
                     IALP_ADMIN_API_KEY=ADMIN["X-API-Key"])
        with httpx.Client(timeout=30) as http:
            # A worse candidate is evaluated on the logged decisions and rejected; it is
            # never served meanwhile.
            bad = _cli(ps, "submit", "--checkpoint", str(worse))["candidate"]
            sent, versions = _drive_until(
                http, url, ps, r, lambda: any(e["kind"] == "rejection" for e in _events(ps)),
                "rejection of the worse candidate", start_user=0)
            assert bad not in versions and _current(r, ps) == served
            rejection = next(e for e in _events(ps) if e["kind"] == "rejection")
            assert rejection["version"] == bad and rejection["diff_high"] < 0
            assert r.get(ps.keys.policy_candidate) is None  # withdrawn

            # A better one is promoted and served.
            good = _cli(ps, "submit", "--checkpoint", str(better))["candidate"]
            sent, versions = _drive_until(
                http, url, ps, r, lambda: _current(r, ps) == good,
                "promotion of the better candidate", start_user=10_000)
            promotion = next(e for e in _events(ps) if e["kind"] == "promotion")
            assert promotion["version"] == good and promotion["diff_low"] > 0
            status = _cli(ps, "status")
            assert status["current"] == good
            assert status["current_meta"]["gate"]["decision"] == "promote"
            ps.wait(lambda: http.get(f"{url}/v1/policy").json()["version"] == good,
                    "replica serves the promoted version")
            # Enough feedback under the good version for the rollback comparison.
            for user in range(20_000, 20_000 + ROLLBACK_MIN + 40):
                assert _event(http, url, user) == good

            # An operator serves the rejected version by mistake: its users' rewards fall,
            # and the trainer rolls it back within the configured window of feedback.
            forced = http.post(f"{url}/v1/policy/rollback", headers=ADMIN,
                               json={"version": bad})
            assert forced.status_code == 200, forced.text
            assert http.get(f"{url}/v1/policy").json()["version"] == bad
            sent, versions = _drive_until(
                http, url, ps, r, lambda: _current(r, ps) == good,
                "automatic rollback", start_user=30_000, limit=ROLLBACK_WINDOW)
            assert sent <= ROLLBACK_WINDOW
            assert versions.count(bad) >= ROLLBACK_MIN
            rollback = next(e for e in _events(ps) if e["kind"] == "rollback")
            assert rollback["from"] == bad and rollback["to"] == good
            assert rollback["served_mean"] < rollback["previous_mean"]
            assert "rollback: version" in ps.logs["trainer"].read_text()
    finally:
        ps.stop()
        r.close()
