"""Run policies against a batched environment and collect episodes; rank held-out next
items (:func:`next_item_ranking`)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from tqdm.auto import tqdm

from policy.types import pad_histories
from simulator_client.baselines import BatchPolicy
from simulator_client.envs.base import RecBatchEnv
from simulator_client.item_features import training_logs
from simulator_client.metrics import Episode, summarize

RankingScorer = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(histories [B, L] int64 PAD=-1 right-aligned, user ids [B]) → scores [B, I]``, higher
is better (an agent's ``ranking_scores``)."""


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


def next_item_ranking(
    test_env: RecBatchEnv,
    scorer: RankingScorer,
    *,
    k: int = 10,
    max_cases: int | None = 5000,
    seed: int = 0,
    max_len: int | None = None,
    batch_size: int = 256,
) -> dict[str, float]:
    """Leave-last-out accuracy of ``scorer`` on the test environment's users' logs:
    ``hr@k``, ``ndcg@k``, ``cases`` and ``skipped_repeat``.

    The logs are :func:`simulator_client.item_features.training_logs` of ``test_env``:
    despite its name it reads whichever environment it is given, here the *test* users'
    sequences (a sequential environment's whole recorded sequence ``dataset.sequences[u]``,
    episode prefix and continuation; Coat's rated items ordered from least to most liked,
    the episodes' initial history). Only this evaluation reads them; no method does. Coat's
    training and test environments hold the same users with the same logs, so there the
    held-out item is one the offline methods (``sasrec``, ``popular``) were fitted on: an
    in-sample fit, not a held-out one; on the sequential environments the test users are
    disjoint from the training users.

    Every log of at least two items is one case: the history is all but the last item
    (its last ``max_len`` items, default the environment's ``history_window`` as the
    agents see it in evaluation, go to ``scorer`` padded by
    :func:`policy.types.pad_histories`), the target the last item. Every history item is
    removed from the ranking, the part the scorer does not see included (every learned
    method masks the history when it acts, and once repeats are skipped a history item is
    never the target). A case whose target is already in its history is skipped and
    counted in ``skipped_repeat`` (over all users, before the ``max_cases`` subsample).

    The target's rank is 1 + the number of remaining items scored strictly higher + its
    position among the items with exactly its score, drawn uniformly (``seed``): a
    seeded random tie-break, as if tied items were put in a random order (how GenEE
    serves its pool; a constant scorer gets the chance level whatever the item ids,
    where breaking ties by id would reward low ids). ``hr@k`` is the share of cases with
    rank ≤ k; ``ndcg@k`` the mean over the cases of 1 / log2(rank + 1) for rank ≤ k, else
    0 (binary relevance: one relevant item, so the ideal DCG is 1). With more than
    ``max_cases`` cases a seeded subsample is scored. Without any case both metrics are
    NaN.
    """
    if k < 1 or batch_size < 1 or (max_cases is not None and max_cases < 1):
        raise ValueError("k, batch_size and max_cases must be positive")
    width = test_env.history_window if max_len is None else int(max_len)
    num_items = test_env.num_items
    pick_seq, tie_seq = np.random.SeedSequence([seed, 53]).spawn(2)
    histories: list[np.ndarray] = []
    users: list[int] = []
    targets: list[int] = []
    skipped = 0
    logs = training_logs(test_env)  # empty when the users start without a history
    for user, log in zip(test_env.users.tolist() if logs else [], logs, strict=True):
        seq = np.asarray(log, dtype=np.int64)
        if len(seq) < 2:
            continue
        hist, target = seq[:-1], int(seq[-1])
        if (hist == target).any():
            skipped += 1
            continue
        histories.append(hist)
        users.append(int(user))
        targets.append(target)
    chosen = np.arange(len(targets))
    if max_cases is not None and len(chosen) > max_cases:
        chosen = np.sort(np.random.default_rng(pick_seq).choice(len(chosen), max_cases,
                                                                replace=False))
    tie_rng = np.random.default_rng(tie_seq)
    hits, gains = 0.0, 0.0
    for start in range(0, len(chosen), batch_size):
        rows = chosen[start:start + batch_size].tolist()
        seen = [histories[i] for i in rows]
        padded = pad_histories([h[-width:].tolist() for h in seen], width)  # [B, width]
        scores = np.asarray(
            scorer(padded, np.asarray([users[i] for i in rows], dtype=np.int64)),
            dtype=np.float64)
        if scores.shape != (len(rows), num_items):
            raise ValueError(f"the scorer returned shape {scores.shape}, expected "
                             f"{(len(rows), num_items)}")
        if np.isnan(scores).any():
            raise ValueError("the scorer returned NaN scores")
        allowed = np.ones(scores.shape, dtype=bool)
        lens = np.asarray([len(h) for h in seen])
        allowed[np.repeat(np.arange(len(rows)), lens), np.concatenate(seen)] = False
        want = np.asarray([targets[i] for i in rows], dtype=np.int64)
        own = scores[np.arange(len(rows)), want][:, None]  # [B, 1]
        above = ((scores > own) & allowed).sum(axis=1)
        tied = ((scores == own) & allowed).sum(axis=1) - 1  # the target itself is allowed
        rank = 1 + above + tie_rng.integers(0, tied + 1)
        top = rank <= k
        hits += float(top.sum())
        gains += float((1.0 / np.log2(rank[top] + 1.0)).sum())
    cases = len(chosen)
    return {
        f"hr@{k}": hits / cases if cases else math.nan,
        f"ndcg@{k}": gains / cases if cases else math.nan,
        "cases": float(cases),
        "skipped_repeat": float(skipped),
    }
