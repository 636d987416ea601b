"""Fuzz every endpoint of the OpenAPI document over real HTTP (small budget here; the
benchmark ``benchmarks/reliability_fuzz.py`` runs a larger one)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from app.main import create_app
from tests.app.conftest import ThreadedServer, make_settings
from tests.reliability.rel_fuzz import fuzz
from trainer.redis_server import EmbeddedRedis


@pytest.fixture
def server(redis_server: EmbeddedRedis) -> Iterator[ThreadedServer]:
    s = ThreadedServer(create_app(make_settings(redis_server.url, num_items=60))).start()
    yield s
    s.stop()


def test_no_endpoint_answers_500_or_a_bare_rejection(server: ThreadedServer) -> None:
    with httpx.Client(timeout=10) as http:
        spec = http.get(f"{server.url}/openapi.json").json()
        events = []
        for u in range(5):  # real event ids, so feedback reaches the decision lookup
            events.append(http.post(f"{server.url}/v1/recommend", json={
                "user_id": u, "history": [u + 1], "k": 2}).json()["event_id"])
    report = fuzz(server.url, spec, examples_per_operation=60,
                  pools={"event_id": events})
    summary = report.summary()
    operations = {f"{m.upper()} {p}" for p, ops in spec["paths"].items() for m in ops}
    assert set(summary["cases_by_endpoint"]) == operations
    assert summary["failures"] == 0, summary["first_failures"]
    # The fuzzer reached past validation too.
    assert any(k.startswith("POST /v1/recommend") and k.endswith(" 200")
               for k in summary["statuses"])
    assert any(k.startswith("POST /v1/feedback") and k.endswith((" 202", " 200", " 409"))
               for k in summary["statuses"])
