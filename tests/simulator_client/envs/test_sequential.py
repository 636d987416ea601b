"""Sequential environments: build a dataset from files end to end, reward, leave rule, split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ialp.cli import main
from policy.types import PAD
from simulator_client.baselines import NextItemPolicy, baseline_for
from simulator_client.envs.sequential import (
    PatienceLeaveRule,
    RankReward,
    SequentialEnv,
    rank_to_reward,
    split_users,
)
from simulator_client.envs.storage import env_folder
from simulator_client.user_models.sequential import (
    SequentialModelConfig,
    train_sequential_model,
)

N_ITEMS = 36
N_USERS = 50


def _write_dataset(folder: Path) -> tuple[Path, Path]:
    """Users walk through one of four item "genres" in a fixed cyclic order, so the next
    item is predictable from the last one: a model that learns anything ranks it high."""
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True, exist_ok=True)
    items = folder / "items.tsv"
    lines = ["item_id\ttitle\tgenre"]
    lines += [f"i{i}\tgadget number {i}\tgenre {i % 4}" for i in range(N_ITEMS)]
    items.write_text("\n".join(lines) + "\n", encoding="utf-8")
    seqs = folder / "sequences.tsv"
    rows = ["user_id\titem_ids"]
    per_genre = N_ITEMS // 4
    for u in range(N_USERS):
        genre, start = u % 4, int(rng.integers(per_genre))
        length = 6 + u % 5
        ids = [f"i{genre + 4 * ((start + k) % per_genre)}" for k in range(length)]
        rows.append(f"user{u}\t{' '.join(ids)}")
    seqs.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return seqs, items


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("IALP_CACHE_DIR", str(path))
    return path


def test_build_and_eval_a_dataset_from_files(
    tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seqs, items = _write_dataset(tmp_path / "data")
    built = _run(
        capsys,
        ["env", "build", "--name", "gadgets", "--sequences", str(seqs), "--items", str(items),
         "--json"],
    )
    assert built["counts"] == {
        "users": N_USERS, "items": N_ITEMS, "interactions": sum(6 + u % 5 for u in range(50)),
        "train_users": 40, "test_users": 10,
    }
    folder = cache / "envs" / "gadgets"
    assert Path(built["folder"]) == folder == env_folder("gadgets")
    assert {p.name for p in folder.iterdir()} >= {"manifest.json", "sequences.tsv", "items.tsv"}
    assert set(built["models"]) == {"train", "test"}
    # The model learned the cyclic order: the true next item is usually in the top 10.
    assert built["models"]["train"]["train_hr@10"] > 0.5

    stats = _run(capsys, ["env", "stats", "gadgets", "--json"])
    assert (stats["users"], stats["items"], stats["test_users"]) == (N_USERS, N_ITEMS, 10)

    argv = ["env", "eval", "gadgets", "--policy", "random,nextitem,oracle", "--episodes", "60",
            "--seed", "3", "--json"]
    first = _run(capsys, argv)
    rows = {r["policy"]: r for r in first["results"]}
    assert rows["oracle"]["r_avg"] == pytest.approx(5.0)
    assert rows["nextitem"]["return"] > rows["random"]["return"]
    assert rows["nextitem"]["length"] > rows["random"]["length"]
    assert rows["oracle"]["return"] >= rows["nextitem"]["return"]
    for r in rows.values():
        assert 1.0 <= r["r_avg"] <= 5.0
    # Same seed, same numbers (models come from the cache the build wrote).
    assert _run(capsys, argv) == first


def test_build_rejects_malformed_files_with_file_and_line(
    tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seqs, items = _write_dataset(tmp_path / "data")
    bad = tmp_path / "bad.tsv"
    bad.write_text("user_id\titem_ids\nu1\ti1 i2\nu2\ti3 nope\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["env", "build", "--name", "bad", "--sequences", str(bad), "--items",
                 str(items)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:3" in err and "unknown item id 'nope'" in err
    assert not (cache / "envs" / "bad" / "manifest.json").exists()
    # Names of other kinds of environment are refused; unknown names are reported.
    with pytest.raises(SystemExit, match="reserved"):
        main(["env", "build", "--name", "coat", "--sequences", str(seqs), "--items", str(items)])
    assert main(["env", "stats", "never-built"]) == 2
    assert "never-built" in capsys.readouterr().err


def test_environment_semantics(tmp_path: Path, cache: Path) -> None:
    from simulator_client.envs.by_name import make_env
    from simulator_client.envs.storage import build_environment

    seqs, items = _write_dataset(tmp_path / "data")
    build_environment("gadgets", sequences=seqs, items=items, progress=False)
    train = make_env("gadgets", "train", progress=False)
    test = make_env("gadgets", "test", progress=False)
    assert isinstance(train, SequentialEnv) and isinstance(test, SequentialEnv)
    assert not set(train.users.tolist()) & set(test.users.tolist())
    assert len(train.users) + len(test.users) == N_USERS
    # Different models (data and seed): a policy is not scored by the model it trained on.
    assert train.user_model.from_cache and test.user_model.from_cache
    hist = np.asarray([[PAD, 0, 4, 8]])
    assert not np.allclose(train.user_model.scores(hist), test.user_model.scores(hist))

    # The initial state is the user's real prefix; nextitem replays the continuation.
    user = int(test.users[0])
    obs = test.reset(np.asarray([user]))
    seq = test.dataset.sequences[user]
    assert obs.row(0).history == tuple(seq[: len(obs.row(0).history)].tolist())
    assert obs.lengths[0] == test.prefixes[user] >= 1
    policy = baseline_for("nextitem", test)
    assert isinstance(policy, NextItemPolicy)
    rng = np.random.default_rng(0)
    for t in range(3):
        action = policy.act(test.observe(), rng)
        assert action[0] == test.continuation(user)[t]
        test.step(action)

    # The oracle's choice is the model's favourite unseen item: reward 5, never a leave.
    test.reset(test.users[:4])
    oracle = baseline_for("oracle", test)
    _, r, term, _, _ = test.step(oracle.act(test.observe(), rng))
    assert np.allclose(r, 5.0) and not term.any()
    with pytest.raises(ValueError, match="nextitem"):
        baseline_for("bogus", test)


def test_rank_reward_scale_repeats_and_batch_consistency(tmp_path: Path, cache: Path) -> None:
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 30, size=8) for _ in range(40)]
    model = train_sequential_model(
        seqs, 30, fingerprint="rank-test", config=SequentialModelConfig(epochs=2), progress=False
    )
    reward = RankReward(model)
    hist = np.full((5, 6), PAD, dtype=np.int64)
    hist[:, 3:] = rng.integers(0, 30, size=(5, 3))
    users = np.arange(5)
    table = reward.reward_all(users, hist, 30)
    assert table.shape == (5, 30)
    assert table.min() >= 1.0 and table.max() == pytest.approx(5.0)
    for b in range(5):
        # Items in the history are repeats: the floor reward.
        assert np.all(table[b, hist[b, 3:]] == 1.0)
    actions = rng.integers(0, 30, size=5)
    assert np.allclose(reward.reward(users, hist, actions), table[users, actions], atol=1e-6)
    assert rank_to_reward(np.asarray([1, 30]), 30).tolist() == [5.0, 1.0]


def test_fast_state_matches_the_module_and_training_is_seeded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(1)
    seqs = [rng.integers(0, 25, size=int(rng.integers(2, 12))) for _ in range(30)]
    text = [f"item {i} colour {i % 3}" for i in range(25)]
    cfg = SequentialModelConfig(epochs=2, window=8, dim=16)
    models = []
    for run in ("a", "b"):
        monkeypatch.setenv("IALP_CACHE_DIR", str(tmp_path / run))
        models.append(
            train_sequential_model(
                seqs, 25, fingerprint="seeded", config=cfg, item_text=text, progress=False
            )
        )
    a, b = models
    assert not a.from_cache and not b.from_cache
    for (name, pa), pb in zip(a.module.state_dict().items(), b.module.state_dict().values(),
                              strict=True):
        assert torch.equal(pa, pb), name
    # The folded inference path computes the same state as the module.
    hist = np.full((4, 10), PAD, dtype=np.int64)
    hist[0, -1] = 3
    hist[1, 2:] = rng.integers(0, 25, size=8)
    hist[2, :] = rng.integers(0, 25, size=10)
    with torch.no_grad():
        from simulator_client.user_models.sequential import to_window

        ref = a.module.state(torch.as_tensor(to_window(hist, cfg.window)))
    assert torch.allclose(a.state(hist), ref, atol=1e-5)
    # A rebuilt model loads the cached weights.
    again = train_sequential_model(seqs, 25, fingerprint="seeded", config=cfg, progress=False)
    assert again.from_cache
    assert np.allclose(again.scores(hist), b.scores(hist))


def test_patience_rule_is_pure_until_update() -> None:
    rule = PatienceLeaveRule(initial=2.0, satisfied=3.0, recovery=0.5)
    rule.allocate(3)
    slots = np.arange(3)
    rule.start(slots)
    none = np.full((3, 5), PAD)
    steps = np.zeros(3, dtype=np.int64)
    low = np.asarray([1.0, 2.0, 5.0], dtype=np.float32)
    assert rule.leaves(slots, slots, low, none, steps).tolist() == [False, False, False]
    # Asking again (as an oracle does) changes nothing.
    assert rule.patience.tolist() == [2.0, 2.0, 2.0]
    rule.update(slots, slots, low)
    assert rule.patience.tolist() == pytest.approx([1.0, 1.5, 2.0])  # capped at initial
    assert rule.leaves(slots, slots, low, none, steps).tolist() == [True, False, False]
    rule.update(slots, slots, np.asarray([3.0, 1.0, 1.0], dtype=np.float32))
    assert rule.patience.tolist() == pytest.approx([1.0, 0.5, 1.0])
    rule.start(np.asarray([1]))
    assert rule.patience[1] == 2.0


def test_user_split_is_seeded_disjoint_and_80_20() -> None:
    train, test = split_users(1220, 0.2, seed=0)
    assert len(test) == 244 and len(train) == 976
    assert not set(train.tolist()) & set(test.tolist())
    again_train, again_test = split_users(1220, 0.2, seed=0)
    assert np.array_equal(train, again_train) and np.array_equal(test, again_test)
    assert not np.array_equal(split_users(1220, 0.2, seed=1)[1], test)
    with pytest.raises(ValueError):
        split_users(1, 0.2, seed=0)


def test_shared_datasets_prepare_with_readme_counts(
    shared_data_dir: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Statistics need no user model: this converts the shared data into the generic format
    # under the cache folder, exactly as `ialp env build --name lfm` does before training.
    lfm = _run(capsys, ["env", "stats", "lfm", "--json"])
    assert (lfm["users"], lfm["items"], lfm["interactions"]) == (1220, 4606, 52925)
    assert (lfm["train_users"], lfm["test_users"]) == (976, 244)
    ind = _run(capsys, ["env", "stats", "industry", "--json"])
    assert (ind["users"], ind["items"], ind["interactions"]) == (8442, 4385, 59427)
    assert (ind["train_users"], ind["test_users"]) == (6754, 1688)
    assert ind["train_interactions"] + ind["test_interactions"] == 59427
    for name in ("lfm", "industry"):
        manifest = json.loads((cache / "envs" / name / "manifest.json").read_text())
        assert manifest["source"] == {"kind": "shared-data", "dataset": name}
    with pytest.raises(SystemExit, match="shared data"):
        main(["env", "build", "--name", "lfm", "--sequences", "x.tsv", "--items", "y.tsv"])


def test_low_ratings_are_not_learned_as_positives() -> None:
    from simulator_client.user_models.sequential import _training_examples

    seqs = [np.asarray([0, 1, 2, 3]), np.asarray([4, 5])]
    ratings = [np.asarray([5.0, 1.0, 4.0, 2.0]), np.asarray([3.0, 5.0])]
    wins, targets = _training_examples(seqs, ratings, window=3, threshold=None)
    # Midpoint of 1..5 is 3: items 1 (rated 1) and 3 (rated 2) are not targets, but item 1
    # still appears in the history that predicts item 2.
    assert targets.tolist() == [2, 5]
    assert wins.tolist() == [[0, 1, 2], [0, 0, 5]]
    _, all_targets = _training_examples(seqs, None, window=3, threshold=None)
    assert all_targets.tolist() == [1, 2, 3, 5]
