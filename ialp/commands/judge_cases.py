"""Judge evaluation cases and the judge as a policy, shared by ``ialp llm`` and
``ialp llm compare``.

Evaluation cases ("real next item"):

* LFM / Industry: the environment's held-out test users; history = the sequence without
  its last item, target = the last item.
* Coat has no order. History = the environment's initial state (the user's rated training
  items); the "real next item" proxy is an item the user rated 4 or 5 in the randomly
  assigned ``test.ascii`` ratings. Tuning examples for Coat hold out one training item
  rated 4 or 5 instead, so tuning never sees the report's targets.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from policy.judge.spec import JUDGE_ENVS


def _check_env(env: str) -> None:
    if env not in JUDGE_ENVS:
        raise SystemExit(f"--env must be one of {', '.join(JUDGE_ENVS)} (got {env!r})")


def env_item_text(env: str) -> tuple[str, ...]:
    """Item texts of ``env``, as its environments carry them (no user model is trained)."""
    _check_env(env)
    if env == "coat":
        from simulator_client.datasets.coat import load_coat

        return load_coat().item_text
    from simulator_client.envs.storage import load_builtin_dataset

    return load_builtin_dataset(env).item_text


def build_cases(
    env: str, split: str, n: int, *, k: int = 10, seed: int = 0
) -> tuple[tuple[str, ...], list[Any]]:
    """(item texts, ``n`` judge cases) of ``env``; ``split`` "test" for reports, "train"
    for tuning data (see the module docstring for what the real next item is)."""
    from policy.judge.evaluate import make_case

    _check_env(env)
    rng = np.random.default_rng(seed)
    cases = []
    if env == "coat":
        from simulator_client.datasets.coat import load_coat
        from simulator_client.envs.coat import make_coat_env

        data = load_coat()
        texts = data.item_text
        init = make_coat_env("test", data=data, progress=False).initial_history
        assert init is not None
        pool = []
        for user in range(data.num_users):
            hist = [int(i) for i in init(user)]
            if split == "test":
                targets = [int(i) for i in np.flatnonzero(data.test[user] >= 4) if i not in hist]
            else:
                targets = [int(i) for i in np.flatnonzero(data.train[user] >= 4)]
            if targets:
                pool.append((user, hist, targets))
        # Every user once (in a random order) before anyone twice.
        order = np.concatenate([rng.permutation(len(pool)) for _ in range(-(-n // len(pool)))])
        for j in order[:n].tolist():
            user, hist, targets = pool[j]
            target = targets[int(rng.integers(len(targets)))]
            h = [i for i in hist if i != target]
            cases.append(make_case(user, h, target, data.num_items, k, rng))
        return texts, cases
    from simulator_client.envs.sequential import SequentialEnvConfig, split_users
    from simulator_client.envs.storage import load_builtin_dataset

    ds = load_builtin_dataset(env)
    cfg = SequentialEnvConfig()
    train_users, test_users = split_users(ds.num_users, cfg.test_fraction, cfg.split_seed)
    users = test_users if split == "test" else train_users
    users = users[[len(ds.sequences[u]) >= 2 for u in users]]
    picked = rng.permutation(users)
    if n > len(picked):
        picked = np.concatenate([picked, rng.choice(users, size=n - len(picked))])
    for user in picked[:n].tolist():
        seq = ds.sequences[user].tolist()
        # Tuning never uses the last two items (the source split's valid/test targets).
        cut = len(seq) - 1 if split == "test" else int(rng.integers(1, max(2, len(seq) - 2)))
        cases.append(make_case(user, seq[:cut], seq[cut], ds.num_items, k, rng))
    return ds.item_text, cases


class JudgePolicy:
    """BatchPolicy: the judge picks among k uniformly drawn unseen items."""

    def __init__(self, judge: Any, num_items: int, k: int) -> None:
        self.judge, self.num_items, self.k = judge, num_items, k

    def act(self, obs: Any, rng: np.random.Generator) -> np.ndarray:
        histories = [obs.row(i).history for i in range(len(obs))]
        cands = []
        for h in histories:
            allowed = np.setdiff1d(np.arange(self.num_items), np.asarray(h, dtype=np.int64))
            cands.append(rng.choice(allowed, self.k, replace=False).tolist())
        picks = self.judge.choose_batch(histories, cands)
        return np.asarray([c[p] if p is not None else c[int(rng.integers(self.k))]
                           for c, p in zip(cands, picks, strict=True)], dtype=np.int64)
