"""End to end: a real Redis, ``ialp serve`` (uvicorn over HTTP) and ``ialp trainer`` as
separate processes; simulated users ask for recommendations and send feedback; the
policy version advances, α rises, and every accepted event is learned exactly once."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

from ialp.procs import spawn_ialp, stop_all
from trainer.transport.keys import RedisKeys
from trainer.transport.redis_server import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parents[2]
N_ITEMS = 20
UPDATE_EVERY = 16


KEY = "e2e-feedback-key"
AUTH = {"X-API-Key": KEY}


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    return spawn_ialp(args, log, cwd=ROOT, env={"IALP_API_KEY": KEY})


def _wait(pred: Callable[[], bool], what: str, procs: list[subprocess.Popen[bytes]],
          logs: list[Path], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if pred():
                return
        except (httpx.HTTPError, redis.RedisError):
            pass
        dead = [p for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            tails = "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in logs)
            raise AssertionError(f"waiting for {what} failed\n{tails}")
        time.sleep(0.1)


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert m, name
    return float(m.group(1))


@pytest.fixture(scope="module")
def stack(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[dict[str, object]]:
    tmp = tmp_path_factory.mktemp("e2e")
    ns = f"e2e-{uuid.uuid4().hex[:8]}"
    api_port, metrics_port = free_port(), free_port()
    common = ["--redis-url", redis_server.url, "--namespace", ns, "--num-items", str(N_ITEMS),
              "--seed", "3"]
    logs = [tmp / "trainer.log", tmp / "api.log"]
    trainer = _spawn(["trainer", *common, "--state-dir", str(tmp / "state"),
                      "--update-every", str(UPDATE_EVERY), "--alpha-steps", "4",
                      "--flush-idle-s", "1", "--metrics-port", str(metrics_port),
                      "--consumer", "e2e-trainer", "--learner-options", '{"lr": 0.01}'],
                     logs[0])
    api = _spawn(["serve", *common, "--port", str(api_port), "--max-k", "3"], logs[1])
    procs = [trainer, api]
    info: dict[str, object] = {
        "api": f"http://127.0.0.1:{api_port}", "metrics": f"http://127.0.0.1:{metrics_port}",
        "ns": ns, "procs": procs, "logs": logs, "redis": redis_server.url}
    try:
        with httpx.Client(timeout=10) as http:
            _wait(lambda: http.get(f"{info['metrics']}/metrics").status_code == 200,
                  "trainer metrics", procs, logs)
            _wait(lambda: http.get(f"{info['api']}/readyz").status_code == 200,
                  "API ready", procs, logs)
            _wait(lambda: http.get(f"{info['api']}/v1/policy").json()["version"] >= 1,
                  "first published version", procs, logs)
        yield info
    finally:
        stop_all(procs)


def test_live_learning_end_to_end(stack: dict[str, object]) -> None:
    api, metrics_url = str(stack["api"]), str(stack["metrics"])
    procs, logs = stack["procs"], stack["logs"]
    assert isinstance(procs, list) and isinstance(logs, list)
    rng = np.random.default_rng(0)
    liked = {u: set(rng.choice(N_ITEMS, size=5, replace=False).tolist()) for u in range(6)}
    histories = {u: [int(rng.integers(N_ITEMS))] for u in range(6)}
    accepted: list[str] = []
    duplicates = 0
    with httpx.Client(timeout=30) as http:
        start = http.get(f"{api}/v1/policy").json()
        assert start["scheme"] == "ap" and start["alpha"] == 0.0
        for step in range(60):
            for user in range(6):
                rec = http.post(f"{api}/v1/recommend", json={
                    "user_id": user, "history": histories[user][-10:], "k": 2})
                assert rec.status_code == 200, rec.text
                body = rec.json()
                item = body["items"][0]
                reward = 1.0 if item in liked[user] else 0.0
                fb = http.post(f"{api}/v1/feedback", json={
                    "event_id": body["event_id"], "item_id": item, "reward": reward,
                    "done": False}, headers=AUTH)
                assert fb.status_code == 202, fb.text
                accepted.append(body["event_id"])
                histories[user].append(item)
                if step % 10 == 0:  # a client retrying: must not be learned twice
                    dup = http.post(f"{api}/v1/feedback", json={
                        "event_id": body["event_id"], "item_id": item, "reward": reward},
                        headers=AUTH)
                    assert dup.status_code == 200 and dup.json()["status"] == "duplicate"
                    duplicates += 1
        n = len(accepted)

        def learned() -> float:
            return _metric(http.get(f"{metrics_url}/metrics").text,
                           "ialp_trainer_events_learned_total")

        _wait(lambda: learned() == n, f"{n} events learned", procs, logs)
        trainer_text = http.get(f"{metrics_url}/metrics").text
        updates = _metric(trainer_text, "ialp_trainer_updates_total")
        assert updates >= n // UPDATE_EVERY
        assert _metric(trainer_text, "ialp_trainer_duplicates_total") == 0
        version = _metric(trainer_text, "ialp_trainer_policy_version")
        _wait(lambda: http.get(f"{api}/v1/policy").json()["version"] == version,
              "API serving the last version", procs, logs)
        end = http.get(f"{api}/v1/policy").json()
        assert end["version"] > start["version"]
        # alpha_steps=4 updates; α stops at the trainer's alpha_end (0.95: θ stays a control)
        assert end["alpha"] == pytest.approx(0.95) and end["alpha"] > start["alpha"]
        assert end["events_learned"] == n and end["trainer_lag"] == 0
        assert end["updates"] == updates
        api_text = http.get(f"{api}/metrics").text
        assert _metric(api_text, 'ialp_feedback_total{outcome="accepted"}') == n
        assert _metric(api_text, 'ialp_feedback_total{outcome="duplicate"}') == duplicates
        assert _metric(api_text, "ialp_policy_version") == version

    # Every accepted event id carries exactly one learned marker; the stream holds each once.
    r = redis.Redis.from_url(str(stack["redis"]))
    keys = RedisKeys(str(stack["ns"]))
    assert all(r.exists(keys.learned(e)) for e in accepted)
    assert r.xlen(keys.stream) == n
    assert r.zcard(keys.trainer_buffer) == 0
    assert r.xpending(keys.stream, "trainer")["pending"] == 0
