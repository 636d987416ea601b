"""Exactly-once between the trainer and Redis when replies are lost, connections are cut
or replies come too late: every accepted event is inside the trainer's resumable state
exactly once (from its learning audit), and the backlog drains. The full matrix (every
command of the cycle × every fault) is benchmarks/reliability_lost_replies.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator_client.chaos.lost_replies import faults_for, run_scenario
from trainer.transport.redis_server import EmbeddedRedis

CASES = [
    # The two losses found in the field: a commit's reply lost after Redis ran it, and a
    # trim's reply lost (a re-sent trim by count deleted unlearned transitions).
    ("commit (EVALSHA commit)", "drop_reply"),
    ("trim (EVALSHA consume)", "drop_reply"),
    ("publish version (EXEC)", "drop_reply"),
    ("read (XREADGROUP)", "drop_reply"),
    ("read buffer (ZRANGE)", "drop_reply"),
    ("commit (EVALSHA commit)", "kill"),
    ("commit (EVALSHA commit)", "delay_reply"),
    ("claim (XAUTOCLAIM)", "drop_reply"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("target", "action"), CASES)
def test_every_accepted_event_is_learned_exactly_once(
        tmp_path: Path, redis_server: EmbeddedRedis, target: str, action: str) -> None:
    faults = faults_for(target, action)
    res = run_scenario(tmp_path, redis_server.port, faults, n_events=160)
    assert len(res["fired"]) == len(faults), res  # the fault really happened
    assert res["accepted"] == 160
    assert (res["learned_once"], res["learned_twice"], res["lost"]) == (160, 0, 0), res
    assert res["drained"] and res["trainer_alive"], res
    assert res["events_learned_counter"] == 160
