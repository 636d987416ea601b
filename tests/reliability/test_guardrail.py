"""The reward guardrail against the real processes: feedback punishes the items the
learnable policy β chooses, then rewards them. While β's users fare measurably worse,
the trainer pulls α back and raises its alarm; after the flip the alarm clears and α
anneals again past where it was."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import numpy as np

from simulator_client.chaos.processes import AUTH, procs
from trainer.transport.redis_server import EmbeddedRedis, free_port


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert m, name
    return float(m.group(1))


def test_guardrail_pulls_alpha_back_and_resumes(redis_server: EmbeddedRedis,
                                                tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    metrics_port = free_port()
    with procs(tmp_path, redis_server.url) as ps, httpx.Client(timeout=30) as http:
        ps.trainer(metrics_port=metrics_port, IALP_UPDATE_EVERY=32, IALP_ALPHA_START=0.0,
                   IALP_ALPHA_STEPS=8, IALP_GUARD_WINDOW=256, IALP_GUARD_MIN_SAMPLES=20,
                   IALP_GUARD_Z=2.0, IALP_FLUSH_IDLE_S=0)
        url = ps.api("api", free_port())
        murl = f"http://127.0.0.1:{metrics_port}/metrics"
        ps.wait(lambda: http.get(murl).status_code == 200, "trainer metrics")

        def trainer_metrics() -> tuple[float, float, float]:
            text = http.get(murl).text
            return (_metric(text, "ialp_trainer_alpha"),
                    _metric(text, "ialp_trainer_guardrail_alarm"),
                    _metric(text, "ialp_trainer_guardrail_alarms_total"))

        sent = [0]

        def in_step() -> bool:
            """Everything sent is learned and the API serves the trainer's version, so
            the next batch is drawn with the α just decided (lockstep, whatever the
            machine's speed)."""
            text = http.get(murl).text
            if _metric(text, "ialp_trainer_events_learned_total") < sent[0]:
                return False
            version = _metric(text, "ialp_trainer_policy_version")
            return bool(http.get(f"{url}/v1/policy").json()["version"] == version)

        def run(p_reward: dict[str, float], stop: object, max_events: int) -> list[
                tuple[float, float]]:
            seen: list[tuple[float, float]] = []
            for i in range(max_events):
                body = http.post(f"{url}/v1/recommend", json={
                    "user_id": i % 7, "history": [i % 30], "k": 1}).json()
                source = body["sources"][0]
                reward = float(rng.random() < p_reward[source])
                fb = http.post(f"{url}/v1/feedback", json={
                    "event_id": body["event_id"], "item_id": body["items"][0],
                    "reward": reward}, headers=AUTH)
                assert fb.status_code == 202, fb.text
                sent[0] += 1
                if sent[0] % 32 == 0:  # one update per 32 events
                    ps.wait(in_step, "trainer and API in step", timeout=60)
                    alpha, alarm, _ = trainer_metrics()
                    seen.append((alpha, alarm))
                    if stop(seen):  # type: ignore[operator]
                        return seen
            raise AssertionError(f"not reached in {max_events} events: {seen}\n"
                                 f"{ps.tails()}")

        # Phase 1: β's items are punished. α rises until β has enough samples, then the
        # alarm fires and α is pulled back below its peak.
        def pulled_back(seen: list[tuple[float, float]]) -> bool:
            peak = max(a for a, _ in seen)
            return any(alarm for _, alarm in seen) and seen[-1][0] < peak
        phase1 = run({"theta": 0.8, "beta": 0.1}, pulled_back, 1200)
        peak1 = max(a for a, _ in phase1)
        assert peak1 > 0.0
        assert trainer_metrics()[2] >= 1  # alarms counted
        # Phase 2: the flip. β's items are now the better ones: the alarm clears and
        # annealing carries α past its phase-1 peak.
        def recovered(seen: list[tuple[float, float]]) -> bool:
            return seen[-1][1] == 0 and seen[-1][0] > peak1
        phase2 = run({"theta": 0.2, "beta": 0.9}, recovered, 1600)
        assert phase2[-1][0] > peak1
        log = ps.logs["trainer"].read_text()
        assert "guardrail: beta's online reward" in log
        assert "guardrail cleared" in log
