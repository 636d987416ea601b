"""The in-process runner: seeded curves, result files, on- and off-policy feeding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from policy.checkpoint import load_checkpoint
from simulator_client.envs.base import MatrixReward, RecBatchEnv
from simulator_client.envs.leave import DistanceLeaveRule, euclidean_item_distances
from simulator_client.experiments import ExperimentConfig, run_experiment, table_rows
from trainer.agents import OnlineConfig


def _env(name: str) -> RecBatchEnv:
    rng = np.random.default_rng(0)
    matrix = rng.integers(1, 6, size=(12, 15)).astype(np.float32)
    return RecBatchEnv(
        name=name,
        num_items=15,
        users=np.arange(12),
        reward_model=MatrixReward(matrix),
        leave_rule=DistanceLeaveRule(euclidean_item_distances(matrix), threshold=4.0, window=3),
        max_steps=6,
        history_window=8,
        initial_history=lambda u: [u % 15],
    )


CONFIG = ExperimentConfig(
    steps=160, eval_every=80, eval_episodes=12, num_envs=4, seed=3, hidden=8, blocks=1,
    max_len=None, online=OnlineConfig(batch_size=16, warmup=16),
)


def _curves(results: dict) -> dict[str, list[tuple[float, ...]]]:
    return {
        m: [(p["step"], p["return"], p["length"], p["r_avg"]) for p in r["curve"]]
        for m, r in results["methods"].items()
    }


def test_same_seed_same_curve_and_files(tmp_path: Path) -> None:
    methods = ["random", "a2c", "dqn", "pg"]
    first = run_experiment("toy", _env("toy-train"), _env("toy-test"), methods, CONFIG,
                           out_dir=tmp_path / "a", progress=False)
    # Each method is seeded on its own, so a run of a subset repeats those curves exactly.
    second = run_experiment("toy", _env("toy-train"), _env("toy-test"), ["pg", "a2c"], CONFIG,
                            progress=False)
    for name in ("pg", "a2c"):
        assert _curves(second)[name] == _curves(first)[name]
    for name in ("a2c", "dqn", "pg"):
        train = first["methods"][name]["train"]
        assert train["steps"] >= CONFIG.steps and train["updates"] > 0, name
        assert first["methods"][name]["curve"][0]["step"] == 0.0
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    assert _curves(saved) == _curves(first)
    assert (tmp_path / "a" / "curves.png").stat().st_size > 1000
    policy = load_checkpoint(tmp_path / "a" / "policies" / "a2c", expected_num_items=15)
    assert policy.metadata["method"] == "a2c"
    rows = table_rows(first)
    assert [r["method"] for r in rows] == methods


def test_a_different_seed_changes_the_curve() -> None:
    base = run_experiment("toy", _env("t"), _env("e"), ["a2c"], CONFIG, progress=False)
    other_cfg = ExperimentConfig(**{**CONFIG.__dict__, "seed": 4})
    other = run_experiment("toy", _env("t"), _env("e"), ["a2c"], other_cfg, progress=False)
    assert _curves(base) != _curves(other)


def test_unknown_method_is_refused() -> None:
    with pytest.raises(KeyError, match="unknown method"):
        run_experiment("toy", _env("t"), _env("e"), ["sarsa"], CONFIG, progress=False)
