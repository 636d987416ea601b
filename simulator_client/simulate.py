"""Replay simulated users against a running service (``ialp simulate``).

Users come from a local environment (the simulated people); the recommender is the
remote service, reached only over HTTP. Each round is a training phase (explore on,
feedback sent, so the service's trainer learns) followed by an evaluation phase on the
test environment (greedy, no feedback). Round 0 evaluates the starting policy (R@0).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from policy.types import PAD
from simulator_client.envs.base import RecBatchEnv
from simulator_client.http_client import ServiceClient
from simulator_client.item_ids import ItemIdMap, negotiate, user_ref
from simulator_client.metrics import Episode, summarize


@dataclass(frozen=True)
class SimulateConfig:
    """How ``ialp simulate`` drives the service."""

    env: str = "coat"
    """Environment name (coat, lfm, industry or a built one)."""
    rounds: int = 5
    """Training rounds after the initial evaluation."""
    episodes: int = 200
    """Training episodes per round (feedback is sent for every step)."""
    eval_episodes: int = 100
    """Test episodes per evaluation (greedy, no feedback)."""
    concurrency: int = 32
    """Simulated users in flight at once."""
    seed: int = 0
    """Seed of user sampling; the service seeds its own sampling."""
    learn_wait_s: float = 30.0
    """After a training round, wait up to this long for the trainer to catch up."""
    exclude_seen: bool = True
    """Send the items already shown in the episode as ``exclude``, as a front end that
    never shows an item twice in a session would."""
    ready_wait_s: float = 120.0
    """Wait up to this long for the service to answer ``/readyz`` before the first round
    (it may still be loading its policy)."""


async def play_episodes(
    client: ServiceClient,
    env: RecBatchEnv,
    users: np.ndarray,
    *,
    explore: bool,
    learn: bool,
    concurrency: int,
    exclude_seen: bool = True,
    ids: ItemIdMap | None = None,
) -> tuple[list[Episode], dict[str, int]]:
    """Play one episode per user, ``concurrency`` users at a time, in lock-step.

    At each step every active user asks the service for a recommendation, the
    environment answers with rewards, and (when ``learn``) the feedback goes back. Items
    travel as the service's ids (``ids``; default: integer indices).
    """
    if ids is None:
        ids = ItemIdMap(tuple(range(env.num_items)), "index")
    n_slots = max(1, min(concurrency, len(users)))
    queue = list(users.tolist())
    slot_user = np.asarray(queue[:n_slots])
    del queue[:n_slots]
    env.reset(slot_user)
    rewards: list[list[float]] = [[] for _ in range(n_slots)]
    left = np.zeros(n_slots, dtype=bool)
    episodes: list[Episode] = []
    counts = {"recommend": 0, "feedback_accepted": 0, "feedback_duplicate": 0}
    sem = asyncio.Semaphore(concurrency)

    async def recommend(slot: int, history: list[int]) -> tuple[int, Any]:
        exclude = env.episode_items(slot).tolist() if exclude_seen else []
        async with sem:
            return slot, await client.recommend(
                user_ref(int(slot_user[slot])), ids.send(history), explore=explore,
                exclude=ids.send(exclude),
            )

    async def feedback(event_id: str, item: int | str, reward: float, done: bool) -> str:
        async with sem:
            return await client.feedback(event_id, item, reward, done=done)

    while env.active.any():
        obs = env.observe()
        active = np.flatnonzero(env.active)
        tasks = []
        for slot in active.tolist():
            hist = obs.history[slot]
            tasks.append(recommend(slot, hist[hist != PAD].tolist()))
        decisions = dict(await asyncio.gather(*tasks))
        counts["recommend"] += len(decisions)
        actions = np.zeros(n_slots, dtype=np.int64)
        for slot, decision in decisions.items():
            actions[slot] = ids.receive(decision.items[:1])[0]
        _, r, term, trunc, _ = env.step(actions)
        if learn:
            statuses = await asyncio.gather(
                *[
                    feedback(decisions[s].event_id, decisions[s].items[0], float(r[s]),
                             bool(term[s] or trunc[s]))
                    for s in active.tolist()
                ]
            )
            counts["feedback_accepted"] += sum(st == "accepted" for st in statuses)
            counts["feedback_duplicate"] += sum(st == "duplicate" for st in statuses)
        for slot in active.tolist():
            rewards[slot].append(float(r[slot]))
            left[slot] |= bool(term[slot])
            if term[slot] or trunc[slot]:
                episodes.append(
                    Episode(
                        user_id=int(slot_user[slot]),
                        items=env.episode_items(slot),
                        rewards=np.asarray(rewards[slot], dtype=np.float32),
                        terminated=bool(left[slot]),
                    )
                )
                if queue:
                    nxt = queue.pop(0)
                    slot_user[slot] = nxt
                    rewards[slot] = []
                    left[slot] = False
                    env.reset_slots(np.asarray([slot]), np.asarray([nxt]))
    return episodes, counts


async def _wait_for_trainer(client: ServiceClient, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    info = await client.policy()
    while time.monotonic() < deadline:
        if info.get("trainer_lag") in (0, None):
            break
        await asyncio.sleep(0.25)
        info = await client.policy()
    return info


async def simulate(
    base_url: str,
    config: SimulateConfig,
    *,
    train_env: RecBatchEnv,
    test_env: RecBatchEnv,
    api_key: str | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run the rounds and return one row per round."""
    rng = np.random.default_rng(config.seed)
    rows: list[dict[str, Any]] = []
    async with ServiceClient(
        base_url, api_key=api_key, max_connections=config.concurrency
    ) as client:
        await client.wait_ready(config.ready_wait_s)
        info = await client.policy()
        ids = await negotiate(client, train_env.item_ids)
        for rnd in range(config.rounds + 1):
            row: dict[str, Any] = {"round": rnd}
            started = time.perf_counter()
            if rnd > 0:
                users = train_env.sample_users(config.episodes, rng)
                eps, counts = await play_episodes(
                    client, train_env, users, explore=True, learn=True,
                    concurrency=config.concurrency, exclude_seen=config.exclude_seen, ids=ids,
                )
                train = summarize(eps, num_items=train_env.num_items)
                row.update(
                    train_return=train["return"], train_length=train["length"], **counts
                )
                info = await _wait_for_trainer(client, config.learn_wait_s)
            users = test_env.sample_users(config.eval_episodes, rng)
            eps, _ = await play_episodes(
                client, test_env, users, explore=False, learn=False,
                concurrency=config.concurrency, exclude_seen=config.exclude_seen, ids=ids,
            )
            test = summarize(eps, num_items=test_env.num_items)
            info = await client.policy()
            row.update(
                {
                    "return": test["return"],
                    "length": test["length"],
                    "r_avg": test["r_avg"],
                    "policy_version": int(info["version"]),
                    "alpha": float(info["alpha"]),
                    "events_learned": int(info.get("events_learned", 0)),
                    "seconds": time.perf_counter() - started,
                }
            )
            rows.append(row)
            if on_round is not None:
                on_round(row)
    return rows


def write_outputs(rows: list[dict[str, Any]], config: SimulateConfig, out_dir: Path,
                  references: dict[str, float] | None = None) -> None:
    """``out_dir/simulate.json`` and ``out_dir/simulate.png`` (Return and α per round);
    ``references`` (name → Return, e.g. random, popular) are drawn as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "simulate.json").write_text(
        json.dumps({"config": asdict(config), "rounds": rows,
                    "references": references or {}}, indent=2)
    )
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    for a in ax:
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    x = [r["round"] for r in rows]
    ax[0].plot(x, [r["return"] for r in rows], marker="o", label="Return (test)")
    ax[0].plot(x, [r["length"] for r in rows], marker="s", label="Length (test)")
    styles = {"random": ("tab:gray", ":"), "popular": ("tab:green", "--"),
              "pre-trained start": ("tab:purple", "-.")}
    for name, value in (references or {}).items():
        colour, line = styles.get(name, ("black", "--"))
        ax[0].axhline(value, color=colour, linestyle=line, linewidth=1.2,
                      label=f"{name} ({value:.1f})")
    ax[0].set_xlabel("round")
    ax[0].set_title(f"{config.env}: test episodes after each training round")
    ax[0].legend()
    ax[1].plot(x, [r["alpha"] for r in rows], marker="o", color="tab:red")
    ax[1].set_xlabel("round")
    ax[1].set_ylabel("α (share of the learnable policy)")
    ax2 = ax[1].twinx()
    ax2.step(x, [r["policy_version"] for r in rows], where="post", color="tab:gray")
    ax2.set_ylabel("policy version")
    ax[1].set_title("served policy")
    fig.tight_layout()
    fig.savefig(out_dir / "simulate.png", dpi=110)
    plt.close(fig)
