"""Fuzz every endpoint of the OpenAPI document over real HTTP, JSON and raw bytes under
any content type (small budget here; ``benchmarks/fuzz_soak.py`` runs 10,000 cases per
endpoint against the real ``ialp serve`` process)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from app.main import create_app
from simulator_client.chaos.fuzz import fuzz
from tests.app.conftest import TEST_API_KEY, ThreadedServer, make_settings
from trainer.transport.redis_server import EmbeddedRedis


@pytest.fixture
def server(redis_server: EmbeddedRedis) -> Iterator[ThreadedServer]:
    # No rate limit: every case must reach the routes, not a 429.
    s = ThreadedServer(create_app(make_settings(redis_server.url, num_items=60,
                                                rate_limit_per_s=0.0,
                                                rate_limit_key_per_s=0.0))).start()
    yield s
    s.stop()


def test_no_endpoint_answers_500_or_a_bare_rejection(server: ThreadedServer) -> None:
    with httpx.Client(timeout=10) as http:
        spec = http.get(f"{server.url}/openapi.json").json()
        events, items = [], []
        for u in range(5):  # real event and item ids: feedback reaches the decision lookup
            rec = http.post(f"{server.url}/v1/recommend", json={
                "user_id": u, "history": [u + 1], "k": 2}).json()
            events.append(rec["event_id"])
            items.extend(rec["items"])
    report = fuzz(server.url, spec, examples_per_operation=60,
                  pools={"event_id": events, "item_id": items}, api_key=TEST_API_KEY)
    summary = report.summary()
    operations = {f"{m.upper()} {p}" for p, ops in spec["paths"].items() for m in ops}
    assert set(summary["cases_by_endpoint"]) == operations
    assert summary["failures"] == 0, summary["first_failures"]
    # The fuzzer reached past validation too.
    assert any(k.startswith("POST /v1/recommend") and k.endswith(" 200")
               for k in summary["statuses"])
    assert any(k.startswith("POST /v1/feedback") and k.endswith((" 202", " 200", " 409"))
               for k in summary["statuses"])
    # Raw bytes, not UTF-8, under content types other than JSON reached every POST route.
    posts = {op for op in operations if op.startswith("POST")}
    assert all(summary["raw_not_utf8"].get(op, 0) >= 3 for op in posts), summary
    assert {"none", "text/plain", "application/octet-stream"} & set(
        summary["raw_content_types"])
    assert summary["answers_5xx"] == 0
