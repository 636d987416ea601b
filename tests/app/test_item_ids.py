"""String ids at the REST edge: a catalogue maps the caller's ids to the policy's indices;
without one, integer indices (and decimal strings) keep working."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from app.item_ids import UNKNOWN_USER_BASE, ItemIds, user_index
from app.main import create_app
from app.settings import ServiceSettings
from policy.catalogue import CATALOGUE_FILE, Catalogue, CatalogueError
from policy.checkpoint import init_policy, save_checkpoint
from policy.config import PolicyConfig
from trainer.transport.bus import transition_from_json
from trainer.transport.keys import RedisKeys

from .conftest import AUTH, ThreadedServer, make_settings

SKUS = [f"sku-{i:03d}" for i in range(40)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-item policy whose folder carries the catalogue, as ``ialp pretrain`` writes it."""
    root = tmp_path_factory.mktemp("ckpt")
    path = save_checkpoint(init_policy(PolicyConfig(num_items=40, max_len=10), seed=0),
                           root / "policy")
    Catalogue.of(SKUS).to_file(path / CATALOGUE_FILE)
    return path


@pytest.fixture(scope="module")
def server(serve: Callable[[ServiceSettings], ThreadedServer], module_redis: str,
           checkpoint: Path) -> ThreadedServer:
    return serve(make_settings(module_redis, checkpoint=checkpoint))


def _post(http: httpx.Client, server: ThreadedServer, path: str, body: dict[str, Any]
          ) -> httpx.Response:
    return http.post(f"{server.url}{path}", json=body, headers=AUTH)


def test_string_ids_in_and_out_and_feedback_by_string_is_enqueued(
        http: httpx.Client, server: ThreadedServer, module_redis: str) -> None:
    resp = _post(http, server, "/v1/recommend", {
        "user_id": "u1", "history": ["sku-005", "sku-006"], "k": 3, "exclude": ["sku-007"]})
    assert resp.status_code == 200, resp.text
    event = resp.json()
    assert len(event["items"]) == 3
    assert all(isinstance(x, str) and x in SKUS for x in event["items"])
    assert "sku-007" not in event["items"]
    item = event["items"][1]
    fb = _post(http, server, "/v1/feedback",
               {"event_id": event["event_id"], "item_id": item, "reward": 4.0})
    assert fb.status_code == 202, fb.text
    rdb = redis.Redis.from_url(module_redis)
    keys = RedisKeys(server.svc.settings.namespace)
    entries = {e[0].decode(): e[1] for e in rdb.xrange(keys.stream, "-", "+")}
    t = transition_from_json(entries[fb.json()["stream_id"]][b"t"])
    # The trainer learns indices: the caller's ids were translated both ways.
    assert t.action == SKUS.index(item)
    assert t.history == (5, 6)
    assert t.user_id == user_index("u1") >= UNKNOWN_USER_BASE


def test_unknown_string_ids_are_422_naming_them(http: httpx.Client,
                                                server: ThreadedServer) -> None:
    resp = _post(http, server, "/v1/recommend",
                 {"user_id": "u1", "history": ["sku-001", "nope", "sku-002", "gone"]})
    assert resp.status_code == 422
    detail = resp.json()["detail"]
    assert [e["loc"] for e in detail] == [["body", "history", 1], ["body", "history", 3]]
    assert "'nope'" in detail[0]["msg"] and "'gone'" in detail[1]["msg"]
    # An integer means the catalogue id with that text, never an index.
    resp = _post(http, server, "/v1/recommend", {"user_id": 1, "history": [3]})
    assert resp.status_code == 422 and "'3'" in resp.json()["detail"][0]["msg"]
    event = _post(http, server, "/v1/recommend",
                  {"user_id": "u2", "history": ["sku-001"]}).json()
    fb = _post(http, server, "/v1/feedback",
               {"event_id": event["event_id"], "item_id": "no-such-sku", "reward": 1.0})
    assert fb.status_code == 422 and "'no-such-sku'" in fb.text
    other = next(x for x in SKUS if x not in event["items"])
    fb = _post(http, server, "/v1/feedback",
               {"event_id": event["event_id"], "item_id": other, "reward": 1.0})
    assert fb.status_code == 409 and other in fb.text


def test_catalogue_endpoint_pages_the_ids(http: httpx.Client, server: ThreadedServer) -> None:
    page = http.get(f"{server.url}/v1/catalogue", params={"offset": 38, "limit": 5}).json()
    assert page["mode"] == "catalogue" and page["size"] == 40
    assert page["item_ids"] == SKUS[38:]
    assert page["fingerprint"] == Catalogue.of(SKUS).fingerprint


def test_without_catalogue_integers_and_decimal_strings_are_indices(
        http: httpx.Client, serve: Callable[[ServiceSettings], ThreadedServer],
        module_redis: str) -> None:
    plain = serve(make_settings(module_redis))
    resp = _post(http, plain, "/v1/recommend", {"user_id": "7", "history": ["3", 4], "k": 2})
    assert resp.status_code == 200, resp.text
    assert all(isinstance(x, int) for x in resp.json()["items"])
    bad = _post(http, plain, "/v1/recommend", {"user_id": "u", "history": ["sku-1"]})
    assert bad.status_code == 422 and "no catalogue" in bad.json()["detail"][0]["msg"]
    page = http.get(f"{plain.url}/v1/catalogue", params={"limit": 3}).json()
    assert page == {"mode": "index", "size": 40, "fingerprint": None, "offset": 0,
                    "item_ids": [0, 1, 2]}


async def test_catalogue_of_the_wrong_size_stops_start_up(
        tmp_path: Path, module_redis: str, checkpoint: Path) -> None:
    wrong = Catalogue.of(SKUS[:30]).to_file(tmp_path / "short.txt")
    app = create_app(make_settings(module_redis, checkpoint=checkpoint, catalogue=wrong))
    with pytest.raises(ValueError, match="catalogue has 30 items but the policy scores 40"):
        async with app.router.lifespan_context(app):
            pass


def test_user_index_rule() -> None:
    assert user_index(12) == 12 and user_index("12") == 12
    assert user_index("alice") == user_index("alice") >= UNKNOWN_USER_BASE
    assert user_index("alice") != user_index("bob")
    assert user_index("alice") < 2**63


def test_catalogue_files(tmp_path: Path) -> None:
    tsv = tmp_path / "items.tsv"
    tsv.write_text("item_id\ttitle\nA-1\tfirst\nB-2\tsecond\n")
    cat = Catalogue.from_file(tsv)
    assert cat.item_ids == ("A-1", "B-2") and cat.index_of("B-2") == 1
    assert cat.indices(["B-2", "zz", "A-1"]) == ([1, 0], ["zz"])
    assert Catalogue.from_file(cat.to_file(tmp_path / "c.txt")) == cat
    assert cat.extended(["C-3"]).ids([2, 0]) == ["C-3", "A-1"]
    dup = tmp_path / "dup.txt"
    dup.write_text("a\nb\na\n")
    with pytest.raises(CatalogueError, match="'a' appears twice"):
        Catalogue.from_file(dup)
    with pytest.raises(CatalogueError, match="item_id"):
        (tmp_path / "bad.tsv").write_text("id\ttitle\nx\ty\n")
        Catalogue.from_file(tmp_path / "bad.tsv")
    with pytest.raises(ValueError, match="2 items but the policy scores 3"):
        ItemIds(3, cat)
