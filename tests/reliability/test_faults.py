"""Faults against the real processes: trainer crash, Redis restart, API replica crash.

Each test runs a scenario of :mod:`simulator_client.chaos.scenarios` (small here; the soak
benchmark runs them long) and checks the counts: every accepted event learned exactly
once, 503 + Retry-After while Redis is down, errors only for requests in flight."""

from __future__ import annotations

from pathlib import Path

from simulator_client.chaos.scenarios import redis_restart, replica_kill, trainer_kill
from trainer.transport.redis_server import EmbeddedRedis


def test_trainer_sigkill_mid_stream_learns_every_event_once(
        redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    res = trainer_kill(tmp_path, redis_server.url, events=90, kill_at=30, down_events=25)
    n = res["events_accepted"]
    assert n == 90 and res["client_errors"] == 0
    # Exactly once: the learned counter (sum of update batch sizes) equals the accepted
    # events, each has its learned marker, nothing is pending or buffered.
    assert res["events_learned"] == n
    assert res["learned_markers"] == n
    assert res["published_events_learned"] == n
    assert res["stream_length"] == n
    assert res["buffer"] == 0 and res["pending"] == 0 and res["dead_lettered"] == 0


def test_redis_restart_loses_no_accepted_event(tmp_path: Path) -> None:
    res = redis_restart(tmp_path, events=60, stop_at=20, down_s=2.0)
    n = res["events_accepted"]
    # Every recorded decision's feedback accepted (plus the one held across the outage);
    # slates served while Redis was unreachable say so and take no feedback.
    assert n + res["slates_unrecorded"] == 61
    assert res["feedback_503_while_down"] >= 1
    assert res["503_without_retry_after"] == 0
    probe = res["recommend_probe"]
    assert probe["errors"] == 0 and set(probe["statuses"]) == {"recommend 200"}
    assert probe["sent"] > 20  # it kept asking through the outage
    assert res["events_learned"] == res["learned_markers"] == n
    assert res["pending"] == 0 and res["buffer"] == 0
    assert res["time_to_recover_s"] is not None


def test_killed_replica_costs_only_requests_in_flight(redis_server: EmbeddedRedis,
                                                      tmp_path: Path) -> None:
    res = replica_kill(tmp_path, redis_server.url, clients=4, requests=60, kill_after=30)
    killed, alive = res["killed_replica"], res["surviving_replica"]
    # Only requests in flight at the killed replica fail: at most one per client.
    assert set(res["errors_by_replica"]) <= {killed}
    assert res["client_errors"] <= res["max_in_flight"]
    assert res["non_2xx"] == {}
    assert res["time_to_recover_s"] is not None  # the survivor kept accepting feedback
    assert res["enqueued_in_redis"] >= res["events_accepted"]
    assert alive != killed
