"""``ialp export`` and ``ialp ope`` on a real Redis: transitions enqueued through the
feedback bus (as the API does), decisions stored by the decision store, a policy version
published by the policies; export → ope round trip, and the command's errors."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis

from app.decisions import Decision, DecisionStore
from ialp.cli import main
from policy.checkpoint import init_policy, policy_to_bytes, save_checkpoint
from policy.config import PolicyConfig
from policy.mixed import MixedPolicy
from trainer.ope.logs import read_jsonl
from trainer.transport.bus import RedisStreamBus
from trainer.transport.keys import RedisKeys
from trainer.transport.publication import PublishedPolicies

ROOT = Path(__file__).resolve().parents[3]
ITEMS = 15


def _policy(seed: int) -> MixedPolicy:
    return init_policy(PolicyConfig(ITEMS, max_len=5, hidden=8, heads=2, blocks=1),
                       seed=seed)


async def _log(redis_url: str, ns: str, n: int = 200) -> MixedPolicy:
    """Serve ``n`` decisions with a logging policy (k = 2 slates, categorical), feed back
    on the first item (the last decision: on the second), publish a candidate version."""
    client = aioredis.Redis.from_url(redis_url)
    keys = RedisKeys(ns)
    bus = RedisStreamBus(client, keys)
    store = DecisionStore(client, keys, ttl_s=3600)
    logging = _policy(1)
    logging.version = 3
    rng = np.random.default_rng(0)
    reward_of = rng.uniform(0, 1, ITEMS)
    decisions = []
    for i in range(n):
        hist = tuple(int(x) for x in rng.integers(0, ITEMS, int(rng.integers(0, 4))))
        slate = logging.act(_obs(i, hist), k=2, rng=rng)
        decisions.append(Decision(f"ev{i}", i % 17, hist, slate.items, slate.propensities,
                                  slate.sources, logging.version, time.time()))
    await store.save_many(decisions)
    for i, d in enumerate(decisions):
        item = d.items[1] if i == n - 1 else d.items[0]
        r = float(rng.random() < reward_of[item])
        await bus.publish(d.transition(item, r, done=False))
    candidate = _policy(2)
    policies = PublishedPolicies(client, keys)
    candidate.version = await policies.next_version()
    await policies.publish(candidate, policy_to_bytes(candidate))
    await client.aclose()
    return candidate


def _obs(i: int, hist: tuple[int, ...]):  # type: ignore[no-untyped-def]
    from policy.types import Observation

    return Observation(user_id=i % 17, history=hist)


async def test_export_then_ope_round_trip(redis_url: str, redis_namespace: str,
                                          tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    candidate = await _log(redis_url, redis_namespace)
    ckpt = save_checkpoint(candidate, tmp_path / "cand")
    export = tmp_path / "log.jsonl"
    # The export as its own process, as an analyst would run it.
    proc = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "ialp"), "export", "--out", str(export),
         "--redis-url", redis_url, "--namespace", redis_namespace],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 200 logged decisions" in proc.stdout
    recs = list(read_jsonl(export))
    assert len(recs) == 200
    assert recs[0].position == 0 and recs[-1].position == 1
    assert recs[0].slate is not None and len(recs[0].slate) == 2
    assert recs[0].transition.event_id == "ev0" and recs[0].transition.policy_version == 3
    row = json.loads(export.read_text().splitlines()[5])
    assert {"event_id", "history", "action", "reward", "propensity", "policy_version",
            "logged_at", "position", "slate"} <= set(row)

    # Offline on the export (checkpoint), online from Redis (version number): same report.
    rc = main(["ope", "--candidate", str(ckpt), "--from-file", str(export),
               "--bootstrap", "200", "--out", str(tmp_path / "off")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "ips" in out and "snips" in out and "dr" in out
    rc = main(["ope", "--candidate", str(candidate.version), "--redis-url", redis_url,
               "--namespace", redis_namespace, "--bootstrap", "200",
               "--out", str(tmp_path / "on")])
    assert rc == 0
    off = json.loads((tmp_path / "off" / "ope.json").read_text())
    on = json.loads((tmp_path / "on" / "ope.json").read_text())
    assert off["estimates"] == on["estimates"]
    assert off["decisions"]["used"] == 199
    assert off["decisions"]["skipped"] == {"later_position": 1, "deterministic_logging": 0}
    assert off["decisions"]["by_version"] == {"3": 199}
    for e in off["estimates"].values():
        assert e["low"] <= e["value"] <= e["high"] and e["ess"] > 1
    assert (tmp_path / "on" / "ope.png").stat().st_size > 1000

    # --since after everything: nothing to evaluate.
    capsys.readouterr()
    rc = main(["ope", "--candidate", str(ckpt), "--from-file", str(export),
               "--since", "2999-01-01T00:00:00", "--out", str(tmp_path / "late")])
    assert rc == 2
    assert "no logged decisions" in capsys.readouterr().err


async def test_ope_errors(redis_url: str, redis_namespace: str, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IALP_REDIS_URL", raising=False)
    ckpt = save_checkpoint(_policy(2), tmp_path / "cand")
    base = ["--redis-url", redis_url, "--namespace", redis_namespace,
            "--out", str(tmp_path / "o")]
    # Empty log.
    assert main(["ope", "--candidate", str(ckpt), *base]) == 2
    assert "no logged decisions" in capsys.readouterr().err
    candidate = await _log(redis_url, redis_namespace, n=20)
    # Unknown version: the message names the kept ones.
    assert main(["ope", "--candidate", "99", *base]) == 2
    err = capsys.readouterr().err
    assert "policy version 99 is not kept" in err and f"[{candidate.version}]" in err
    # Neither a directory nor a number.
    assert main(["ope", "--candidate", str(tmp_path / "missing"), *base]) == 2
    assert "neither a checkpoint directory" in capsys.readouterr().err
    # A candidate for another catalogue.
    other = save_checkpoint(init_policy(PolicyConfig(5, max_len=5, hidden=8, heads=2,
                                                     blocks=1), seed=0), tmp_path / "small")
    assert main(["ope", "--candidate", str(other), *base]) == 2
    assert "outside the candidate's catalogue" in capsys.readouterr().err
    # No Redis configured and no file.
    assert main(["ope", "--candidate", str(ckpt), "--out", str(tmp_path / "o")]) == 2
    assert "pass --redis-url" in capsys.readouterr().err
    # Only greedy (propensity 1) decisions: nothing can be weighted.
    greedy = tmp_path / "greedy.jsonl"
    greedy.write_text(json.dumps({"event_id": "g", "user_id": 1, "history": [], "action": 2,
                                  "reward": 1.0, "done": False, "propensity": 1.0,
                                  "policy_version": 1}) + "\n")
    assert main(["ope", "--candidate", str(ckpt), "--from-file", str(greedy),
                 "--out", str(tmp_path / "o")]) == 2
    assert "deterministic_logging" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"event_id": "x"}\n')
    assert main(["ope", "--candidate", str(ckpt), "--from-file", str(bad),
                 "--out", str(tmp_path / "o")]) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err
