"""Run policies against a batched environment and collect episodes."""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from simulator_client.baselines import BatchPolicy
from simulator_client.envs.base import RecBatchEnv
from simulator_client.metrics import Episode, summarize


def run_episodes(
    env: RecBatchEnv,
    policy: BatchPolicy,
    *,
    episodes: int,
    seed: int,
    batch_size: int = 256,
    progress: bool = False,
) -> list[Episode]:
    """Play ``episodes`` full episodes, ``batch_size`` users at a time.

    Users are drawn by cycling seeded permutations of the environment's pool; the policy
    gets its own generator, so the same seed gives the same episodes.
    """
    if episodes <= 0:
        raise ValueError("episodes must be positive")
    user_seq, policy_seq = np.random.SeedSequence(seed).spawn(2)
    users = env.sample_users(episodes, np.random.default_rng(user_seq))
    rng = np.random.default_rng(policy_seq)
    out: list[Episode] = []
    bar = tqdm(total=episodes, desc=f"eval {env.name}", unit="ep", disable=not progress)
    for start in range(0, episodes, batch_size):
        chunk = users[start : start + batch_size]
        obs = env.reset(chunk)
        rewards = np.zeros((len(chunk), env.max_steps), dtype=np.float32)
        left = np.zeros(len(chunk), dtype=bool)
        while env.active.any():
            actions = policy.act(obs, rng)
            steps_before = obs.steps
            obs, r, term, _trunc, info = env.step(actions)
            rows = np.flatnonzero(info["active"])
            rewards[rows, steps_before[rows]] = r[rows]
            left |= term
        for slot, user in enumerate(chunk.tolist()):
            n = int(obs.steps[slot])
            out.append(
                Episode(
                    user_id=int(user),
                    items=env.episode_items(slot),
                    rewards=rewards[slot, :n].copy(),
                    terminated=bool(left[slot]),
                )
            )
        bar.update(len(chunk))
    bar.close()
    return out


def evaluate(
    env: RecBatchEnv,
    policy: BatchPolicy,
    *,
    episodes: int,
    seed: int,
    batch_size: int = 256,
    progress: bool = False,
) -> dict[str, float]:
    """Metrics of ``policy`` on ``env`` over ``episodes`` episodes."""
    eps = run_episodes(
        env, policy, episodes=episodes, seed=seed, batch_size=batch_size, progress=progress
    )
    return summarize(
        eps,
        num_items=env.num_items,
        item_vectors=env.item_vectors,
        item_popularity=env.item_popularity,
    )
