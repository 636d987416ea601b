"""LAAC offline training (trainer.laac) on a tiny synthetic catalogue, with a real judge."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from policy.config import PolicyConfig
from policy.judge import SCENARIOS, JudgeRequest, PromptBuilder
from policy.judge.base import BaseJudge
from trainer.laac import LAACConfig, draw_candidates, logged_transitions, train_laac

N_ITEMS = 40
N_USERS = 24


class SmallestIdJudge(BaseJudge):
    """A deterministic judge: always the candidate with the smallest item id, in the
    paper's reply form. The logs below only hold items 20–39, so whenever an unlogged item
    is among the candidates it is the pick: most picks are unexplored suggestions."""

    name = "smallest-id"

    def __init__(self, version: str = "v1") -> None:
        super().__init__(PromptBuilder(item_text=[f"item {i}" for i in range(N_ITEMS)],
                                       scenario=SCENARIOS["coat"]))
        self.version = version
        self.asked = 0

    def fingerprint(self) -> str:
        return f"smallest-id-{self.version}"

    def _respond(self, requests: Sequence[JudgeRequest]) -> list[str]:
        self.asked += len(requests)
        return [f"By analysing the user’s preference, the user will select "
                f"{'abcdefghij'[int(np.argmin(r.candidates))]}" for r in requests]


def _logs() -> tuple[list[np.ndarray], list[int]]:
    rng = np.random.default_rng(0)
    logs = [rng.choice(np.arange(20, N_ITEMS), size=12, replace=False) for _ in range(N_USERS)]
    return logs, list(range(N_USERS))


def _policy_config() -> PolicyConfig:
    return PolicyConfig(num_items=N_ITEMS, max_len=8, hidden=16, heads=2, blocks=1,
                        dropout=0.0, num_users=N_USERS)


SMALL = LAACConfig(epochs=30, batch_size=64, llm_batch_size=32, llm_states=200, k=5,
                   holdout=0.0)


def _train(config: LAACConfig, *, seed: int = 0, judge: BaseJudge | None = None,
           cache: Path | None = None) -> tuple[object, dict]:
    logs, users = _logs()
    return train_laac(logs, users, _policy_config(), seed=seed,
                      judge=judge or SmallestIdJudge(), config=config, progress=False,
                      dllm_cache=cache, cache_tag="toy")


@pytest.mark.parametrize("negatives", [0, 4])
def test_anchoring_keeps_unexplored_values_near_the_dataset_actions(negatives: int) -> None:
    """λ > 0 holds f(s, a_LLM) of unexplored suggestions near f(s, a_data); λ = 0 lets
    the adversarial game move them far away (on identical data and seed)."""
    anchored = _train(replace(SMALL, lam=10.0, negatives=negatives))[1]
    free = _train(replace(SMALL, lam=0.0, negatives=negatives))[1]
    assert anchored["dllm_size"] == free["dllm_size"] > 100
    assert anchored["unexplored_share"] > 0.8
    assert anchored["anchoring_gap"] < 0.25, anchored["anchoring_gap"]
    assert free["anchoring_gap"] > 0.35, free["anchoring_gap"]
    assert free["anchoring_gap"] > 2.0 * anchored["anchoring_gap"]


def test_training_is_deterministic_and_finite() -> None:
    cfg = replace(SMALL, epochs=3, holdout=0.1)
    first, report = _train(cfg, seed=3)
    second, _ = _train(cfg, seed=3)
    other, _ = _train(cfg, seed=4)
    a = first.theta.state_dict()  # type: ignore[attr-defined]
    b = second.theta.state_dict()  # type: ignore[attr-defined]
    c = other.theta.state_dict()  # type: ignore[attr-defined]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert all(torch.isfinite(t).all() for t in a.values())
    assert report["holdout_transitions"] > 0 and 1 <= report["best_epoch"] <= 3
    for epoch in report["epochs"]:
        assert all(np.isfinite(v) for v in epoch.values())
    ext = report["extremes"]
    assert ext["non_finite"] == 0 and ext["max_loss"] > 0 and ext["max_value"] > 0
    # The actor acts as it was trained: on items outside the state.
    assert first.exploration.mask_history  # type: ignore[attr-defined]


def test_config_rejects_unknown_keys_naming_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown laac setting\(s\) bogus.*known:.*lam"):
        LAACConfig.from_hyper({"lam": 1.0, "bogus": 2})
    assert LAACConfig.from_hyper({"lam": 0.5}).lam == 0.5
    with pytest.raises(ValueError, match="negative_sampling"):
        LAACConfig(negative_sampling="hard")


def test_dllm_is_cached_and_reused(tmp_path: Path) -> None:
    cfg = replace(SMALL, epochs=1)
    judge = SmallestIdJudge()
    first_policy, first = _train(cfg, judge=judge, cache=tmp_path)
    assert judge.asked == 200 and not first["dllm_cached"]
    again = SmallestIdJudge()
    second_policy, second = _train(cfg, judge=again, cache=tmp_path)
    assert again.asked == 0 and second["dllm_cached"]
    assert second["dllm_size"] == first["dllm_size"]
    a = first_policy.theta.state_dict()  # type: ignore[attr-defined]
    b = second_policy.theta.state_dict()  # type: ignore[attr-defined]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Another judge (another identity) is asked afresh.
    other = SmallestIdJudge("v2")
    _train(cfg, judge=other, cache=tmp_path)
    assert other.asked == 200


def test_transitions_and_candidates() -> None:
    data = logged_transitions([[5, 6, 7], [8]], [10, 11], max_len=2)
    # Positions t >= 1 only; the last one of a sequence is terminal.
    assert data.actions.tolist() == [6, 7] and data.dones.tolist() == [0.0, 1.0]
    assert data.histories.tolist() == [[-1, 5], [5, 6]]
    assert data.next_histories.tolist() == [[5, 6], [6, 7]]
    rng = np.random.default_rng(0)
    cands = draw_candidates(np.array([[0, 1], [-1, 2]]), np.ones(10), 5, rng)
    assert cands.shape == (2, 5)
    assert not {0, 1} & set(cands[0].tolist()) and 2 not in cands[1]
    assert all(len(set(row.tolist())) == 5 for row in cands)


def test_laac_ap_defaults_follow_the_suite() -> None:
    from simulator_client.experiments.methods.laac import (
        ALPHA_HANDOVER,
        AP_DEFAULTS,
        judge_options,
    )
    from simulator_client.experiments.suite_config import ALPHA_HANDOVER as SUITE_HANDOVER
    from simulator_client.experiments.suite_config import mode_settings

    assert ALPHA_HANDOVER == SUITE_HANDOVER
    suite_ap = dict(mode_settings(quick=False)["hyper"]["ialp-ap"])
    suite_ap.pop("alpha_steps")
    assert suite_ap == AP_DEFAULTS
    assert judge_options("embedding") == "--judge embedding"
    assert judge_options("hf:model_path=smollm2,no_debias=true") == (
        "--judge hf --model-path smollm2 --no-debias")
    assert judge_options("--judge hf --model-path m") == "--judge hf --model-path m"


def test_methods_train_laac_once_and_report_it(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """``laac`` and ``laac-ap`` of one run share one (cached) LAAC training."""
    from simulator_client.envs.base import LeaveRule, MatrixReward, RecBatchEnv
    from simulator_client.experiments import ExperimentConfig, run_experiment
    from simulator_client.experiments.methods import laac as methods
    from trainer.agents import OnlineConfig

    class NeverLeave(LeaveRule):
        def leaves(self, slots, actions, rewards, recommended, steps):  # type: ignore[no-untyped-def]
            return np.zeros(len(slots), dtype=bool)

    logs, users = _logs()

    def env(name: str) -> RecBatchEnv:
        return RecBatchEnv(name=name, num_items=N_ITEMS, users=np.asarray(users),
                           reward_model=MatrixReward(np.ones((N_USERS, N_ITEMS))),
                           leave_rule=NeverLeave(), max_steps=4, history_window=12,
                           initial_history=lambda u: [int(i) for i in logs[u]],
                           item_text=[f"item {i}" for i in range(N_ITEMS)])

    built: list[str] = []

    def build_judge(setting: str, env_name: str, item_text: object) -> BaseJudge:
        built.append(env_name)
        return SmallestIdJudge()

    monkeypatch.setenv("IALP_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(methods, "build_judge", build_judge)
    config = ExperimentConfig(
        steps=32, eval_every=32, eval_episodes=4, num_envs=4, seed=0, hidden=8, blocks=1,
        max_len=8, online=OnlineConfig(mask_history=True, warmup=8, batch_size=8),
        hyper={"laac": {"epochs": 2, "llm_states": 50, "k": 5}})
    res = run_experiment("toy", env("toy-train"), env("toy-test"), ["laac", "laac-ap"],
                         config, progress=False)
    assert built == ["toy"]  # one judge, one training, for both methods
    assert list((tmp_path / "laac-policy").iterdir()) and list(
        (tmp_path / "laac-dllm").iterdir())
    for name in ("laac", "laac-ap"):
        out = res["methods"][name]
        assert out["report"]["laac"]["dllm_size"] > 0
        assert out["pretrain"]["extremes"]["non_finite"] == 0
    assert res["methods"]["laac"]["train"]["updates"] == 0  # frozen
    assert res["methods"]["laac-ap"]["train"]["updates"] > 0  # β learns online
