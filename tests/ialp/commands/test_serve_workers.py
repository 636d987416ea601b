"""``ialp serve --workers N``: several real uvicorn worker processes behind one port,
sharing Redis and the published policy."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from ialp.procs import spawn_ialp, stop_all, wait_ready
from trainer.transport.redis_server import EmbeddedRedis, free_port

KEY = "workers-test-key"


def test_two_workers_serve_one_port_and_join_each_others_feedback(
        redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    port = free_port()
    ns = f"workers-{uuid.uuid4().hex[:8]}"
    proc = spawn_ialp(["serve", "--port", str(port), "--redis-url", redis_server.url,
                       "--namespace", ns, "--num-items", "50", "--workers", "2",
                       "--rate-limit-per-s", "0", "--log-level", "info"],
                      tmp_path / "serve.log", env={"IALP_API_KEY": KEY})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready([url], [proc], timeout_s=120, what="two workers")
        answers = []
        for i in range(40):
            # A new connection per call: the kernel spreads them over the workers.
            with httpx.Client() as client:
                r = client.post(f"{url}/v1/recommend",
                                json={"user_id": i, "history": [1, 2], "k": 1})
                assert r.status_code == 200
                answers.append(r.json())
        log = (tmp_path / "serve.log").read_text()
        pids = {line.split("[", 1)[1].split("]", 1)[0] for line in log.splitlines()
                if "Started server process [" in line}
        assert len(pids) == 2, log  # two worker processes came up
        # Feedback for every decision is accepted, whichever worker made it: the
        # decisions live in the shared Redis.
        for a in answers:
            fb = httpx.post(f"{url}/v1/feedback", headers={"X-API-Key": KEY}, json={
                "event_id": a["event_id"], "item_id": a["items"][0], "reward": 1.0,
                "done": False})
            assert fb.status_code == 202, fb.text
        # Workers draw their own exploration noise: not every answer is the same item.
        assert len({a["items"][0] for a in answers}) > 1
    finally:
        stop_all([proc])
