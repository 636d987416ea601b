"""``ialp policy``: submit a candidate, status, events, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ialp.cli import main
from policy.checkpoint import init_policy, save_checkpoint
from policy.config import PolicyConfig


def _ckpt(tmp_path: Path, name: str, items: int) -> str:
    policy = init_policy(PolicyConfig(num_items=items, max_len=8), seed=0)
    return str(save_checkpoint(policy, tmp_path / name))


def test_submit_status_events_and_errors(tmp_path: Path, redis_url: str,
                                         redis_namespace: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    where = ["--redis-url", redis_url, "--namespace", redis_namespace]
    assert main(["policy", "status", "--json", *where]) == 0
    assert json.loads(capsys.readouterr().out)["current"] is None

    assert main(["policy", "submit", "--checkpoint", _ckpt(tmp_path, "a", 20), *where]) == 0
    assert "submitted version 1 as the candidate" in capsys.readouterr().out
    assert main(["policy", "status", "--json", *where]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["candidate"] == 1 and status["current"] is None
    assert status["candidate_meta"]["num_items"] == 20

    assert main(["policy", "events", "--json", *where]) == 0
    events = json.loads(capsys.readouterr().out)["events"]
    assert events[0]["kind"] == "submission" and events[0]["version"] == 1

    # Nothing to compare with yet; serve version 1, then a 30-item checkpoint is refused.
    import redis

    r = redis.Redis.from_url(redis_url)
    r.set(f"{redis_namespace}:policy:current", 1)
    r.close()
    assert main(["policy", "submit", "--checkpoint", _ckpt(tmp_path, "b", 30), *where]) == 2
    assert "30 items, the served version 20" in capsys.readouterr().err
    assert main(["policy", "submit", "--checkpoint", str(tmp_path / "missing"), *where]) == 2
    capsys.readouterr()


def test_without_redis_the_error_says_what_to_pass(capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IALP_REDIS_URL", raising=False)
    assert main(["policy", "status"]) == 2
    assert "pass --redis-url" in capsys.readouterr().err
