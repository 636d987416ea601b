"""`ialp simulate` against a real service (API + trainer processes)."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator_client.envs.base import RecBatchEnv
from simulator_client.envs.coat import make_coat_env
from simulator_client.simulate import SimulateConfig, simulate, write_outputs
from tests.service_stack import Stack, service_stack
from trainer.transport.redis_server import EmbeddedRedis, free_port


@pytest.fixture(scope="module")
def stack(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("replay")
    with service_stack(
        redis_server.url, tmp, num_items=300, port=free_port(),
        trainer_args=["--update-every", "32", "--alpha-steps", "10"],
        serve_args=["--enable-noop"],
    ) as s:
        yield s


@pytest.fixture(scope="module")
def coat_envs() -> tuple[RecBatchEnv, RecBatchEnv]:
    return make_coat_env("train", progress=False), make_coat_env("test", progress=False)


def test_simulate_learns_every_event_and_alpha_rises(
    stack: Stack, coat_envs: tuple[RecBatchEnv, RecBatchEnv], tmp_path: Path
) -> None:
    train_env, test_env = coat_envs
    config = SimulateConfig(env="coat", rounds=2, episodes=12, eval_episodes=8,
                            concurrency=8, seed=1, learn_wait_s=60)
    rows = asyncio.run(simulate(stack.api, config, train_env=train_env, test_env=test_env,
                                api_key=stack.api_key))
    assert [r["round"] for r in rows] == [0, 1, 2]
    sent = sum(r.get("feedback_accepted", 0) for r in rows)
    assert sent == sum(r.get("recommend", 0) for r in rows[1:]) > 0
    assert all(r.get("feedback_duplicate", 0) == 0 for r in rows)
    # Every accepted event is learned exactly once (the trainer caught up after each round).
    assert rows[-1]["events_learned"] - rows[0]["events_learned"] == sent
    assert rows[-1]["policy_version"] > rows[0]["policy_version"]
    assert rows[-1]["alpha"] > rows[0]["alpha"]
    for r in rows:
        assert math.isfinite(r["return"]) and r["length"] >= 1
    write_outputs(rows, config, tmp_path)
    saved = json.loads((tmp_path / "simulate.json").read_text())
    assert saved["rounds"][2]["policy_version"] == rows[2]["policy_version"]
    assert (tmp_path / "simulate.png").stat().st_size > 1000


def test_simulate_refuses_a_mismatched_catalogue(stack: Stack) -> None:
    import numpy as np

    from simulator_client.envs.base import MatrixReward
    from simulator_client.envs.leave import DistanceLeaveRule

    tiny = RecBatchEnv(
        name="tiny", num_items=5, users=np.arange(2),
        reward_model=MatrixReward(np.ones((2, 5))),
        leave_rule=DistanceLeaveRule(np.full((5, 5), 10.0)), max_steps=3,
    )
    with pytest.raises(ValueError, match="300 items but the environment"):
        asyncio.run(simulate(stack.api, SimulateConfig(rounds=0), train_env=tiny,
                             test_env=tiny))
