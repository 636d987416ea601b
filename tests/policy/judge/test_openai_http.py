"""The OpenAI-compatible HTTP judge against a real local server, and the reply cache."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from policy.judge import AnswerCache, make_judge
from policy.judge.openai_http import JudgeBackendError, OpenAIJudge

ITEMS = [f"jacket number {i}" for i in range(30)]


@dataclass
class ServerState:
    """What the fake model server saw and how it should misbehave."""

    calls: int = 0
    fail_first: int = 0
    fail_status: int = 503
    delay_s: float = 0.0
    in_flight: int = 0
    max_in_flight: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)


def _answer(prompt: str) -> str:
    # A deterministic "model": the user likes whatever is labelled b, unless the history
    # mentions jacket number 0, then nothing.
    history = prompt.split("History:")[1].split("Which one")[0]
    if "jacket number 0 " in history or "jacket number 0." in history:
        return "None"
    return "By analysing the user’s preference, the user will select b."


def _make_app(state: ServerState) -> FastAPI:
    app = FastAPI()

    async def handle(request: Request, chat: bool) -> JSONResponse:
        state.calls += 1
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            body = await request.json()
            state.bodies.append(body)
            if state.delay_s:
                await asyncio.sleep(state.delay_s)
            if state.calls <= state.fail_first:
                return JSONResponse({"error": {"message": "overloaded"}},
                                    status_code=state.fail_status, headers={"Retry-After": "0"})
            if chat:
                prompt = body["messages"][-1]["content"]
                return JSONResponse({"choices": [{"index": 0, "message": {
                    "role": "assistant", "content": _answer(prompt)}}]})
            return JSONResponse({"choices": [{"index": 0, "text": " " + _answer(body["prompt"])}]})
        finally:
            state.in_flight -= 1

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        return await handle(request, True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> JSONResponse:
        return await handle(request, False)

    return app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, ServerState]]:
    state = ServerState()
    port = _free_port()
    config = uvicorn.Config(_make_app(state), host="127.0.0.1", port=port, log_level="error",
                            lifespan="off", ws="none")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline:
            raise RuntimeError("test model server did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/v1", state
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture()
def fresh(server: tuple[str, ServerState]) -> tuple[str, ServerState]:
    url, state = server
    # A request abandoned by a timing-out client may still be sleeping in the server.
    deadline = time.monotonic() + 10
    while state.in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
    state.calls = state.fail_first = state.max_in_flight = 0
    state.delay_s = 0.0
    state.fail_status = 503
    state.bodies.clear()
    return url, state


def _judge(url: str, cache: AnswerCache | None = None, **kw: Any) -> OpenAIJudge:
    judge = make_judge("openai", item_text=ITEMS, scenario="coat",
                       cache=cache if cache is not None else False, base_url=url,
                       model="tiny", backoff_s=0.01, **kw)
    assert isinstance(judge, OpenAIJudge)
    return judge


def test_chat_and_completion_modes_parse_server_replies(fresh: tuple[str, ServerState]) -> None:
    url, state = fresh
    for mode in ("chat", "completions"):
        judge = _judge(url, mode=mode)
        answers = judge.judge_batch([[5, 6], [0, 1]], [list(range(10, 20))] * 2)
        assert [(a.kind, a.index) for a in answers] == [("item", 1), ("none", None)]
        assert [a.reward for a in answers] == [1.0, 0.0]
        assert judge.choose([7], list(range(20, 30))) == 1
        judge.close()
    assert state.calls == 6
    assert state.bodies[0]["model"] == "tiny" and state.bodies[0]["temperature"] == 0.0
    assert "k. None" in state.bodies[0]["messages"][0]["content"]


def test_retries_overload_then_succeeds(fresh: tuple[str, ServerState]) -> None:
    url, state = fresh
    state.fail_first = 2
    judge = _judge(url, max_retries=3)
    assert judge.choose([3], list(range(10, 20))) == 1
    assert state.calls == 3
    judge.close()


def test_gives_up_with_a_clear_error(fresh: tuple[str, ServerState]) -> None:
    url, state = fresh
    state.fail_first = 100
    judge = _judge(url, max_retries=1)
    with pytest.raises(JudgeBackendError, match=r"failed after 2 attempts.*HTTP 503"):
        judge.choose([3], list(range(10, 20)))
    judge.close()
    # A client error is not retried.
    state.calls, state.fail_first, state.fail_status = 0, 100, 400
    judge = _judge(url, max_retries=3)
    with pytest.raises(JudgeBackendError, match=r"refused the request: HTTP 400"):
        judge.choose([3], list(range(10, 20)))
    assert state.calls == 1
    judge.close()


def test_timeout_and_refused_connection_are_reported(fresh: tuple[str, ServerState]) -> None:
    url, state = fresh
    state.delay_s = 1.0
    judge = _judge(url, max_retries=0, timeout_s=0.1)
    with pytest.raises(JudgeBackendError, match="timed out"):
        judge.choose([3], list(range(10, 20)))
    judge.close()
    dead = _judge(f"http://127.0.0.1:{_free_port()}/v1", max_retries=1)
    with pytest.raises(JudgeBackendError, match="connection failed"):
        dead.choose([3], list(range(10, 20)))
    dead.close()


def test_concurrency_limit_is_respected(fresh: tuple[str, ServerState]) -> None:
    url, state = fresh
    state.delay_s = 0.05
    judge = _judge(url, concurrency=3)
    histories = [[i] for i in range(1, 13)]
    answers = judge.choose_batch(histories, [list(range(10, 20))] * 12)
    assert answers == [1] * 12
    assert state.calls == 12
    assert 1 < state.max_in_flight <= 3
    judge.close()


def test_cache_avoids_second_call_and_survives_restart(
    fresh: tuple[str, ServerState], tmp_path: Path
) -> None:
    url, state = fresh
    cache = AnswerCache(tmp_path / "answers.sqlite")
    judge = _judge(url, cache=cache)
    hist, cands = [[1, 2], [3], [1, 2]], [list(range(10, 20)), list(range(20, 30)),
                                          list(range(10, 20))]
    first = judge.judge_batch(hist, cands)
    # The duplicate prompt in the batch was asked once.
    assert state.calls == 2 and judge.stats.backend_prompts == 2
    second = judge.judge_batch(hist, cands)
    assert state.calls == 2
    assert [a.index for a in second] == [a.index for a in first]
    assert all(a.cached for a in second) and not any(a.cached for a in first)
    assert judge.stats.cache_hits == 3 and judge.stats.backend_calls == 1
    judge.close()
    cache.close()
    # A new process (new judge, same file) resumes from the stored replies.
    again = _judge(url, cache=AnswerCache(tmp_path / "answers.sqlite"))
    assert again.choose_batch(hist, cands) == [1, 1, 1]
    assert state.calls == 2
    # A different model name is a different cache namespace.
    other = make_judge("openai", item_text=ITEMS, scenario="coat",
                       cache=AnswerCache(tmp_path / "answers.sqlite"), base_url=url,
                       model="other")
    other.choose([1, 2], list(range(10, 20)))
    assert state.calls == 3
    again.close()
    other.close()
