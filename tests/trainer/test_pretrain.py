"""iALP pre-training (Algorithm 1) with a rule-based judge: the policy learns its taste."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from policy.checkpoint import init_policy, load_checkpoint
from policy.config import PolicyConfig
from policy.judge import SCENARIOS, JudgeRequest, PromptBuilder
from policy.judge.base import BaseJudge
from policy.types import pad_histories
from trainer.pretrain import PretrainConfig, StartState, pretrain_ialp, save_pretrain

N_ITEMS = 30


class EvenItemJudge(BaseJudge):
    """A judge with a known taste: the first even-numbered candidate, else None; replies
    in the paper's form, except for candidates lists starting with item 29 (garbage)."""

    name = "even"

    def __init__(self) -> None:
        super().__init__(PromptBuilder(item_text=[f"item {i}" for i in range(N_ITEMS)],
                                       scenario=SCENARIOS["coat"]))
        self.seen: list[JudgeRequest] = []

    def fingerprint(self) -> str:
        return "even-v1"

    def _respond(self, requests: Sequence[JudgeRequest]) -> list[str]:
        out = []
        for r in requests:
            self.seen.append(r)
            if r.candidates[0] == 29:
                out.append("I am not sure.")
                continue
            even = [i for i, c in enumerate(r.candidates) if c % 2 == 0]
            label = "abcdefghijk"[even[0]] if even else "None"
            out.append(f"By analysing the user’s preference, the user will select {label}")
        return out


def _config() -> PolicyConfig:
    return PolicyConfig(num_items=N_ITEMS, max_len=8, hidden=16, heads=2, blocks=1,
                        dropout=0.0, num_users=16)


def _even_mass(policy: object, starts: list[StartState]) -> float:
    probs = policy.probs(pad_histories([s.history for s in starts], 8),  # type: ignore[attr-defined]
                         np.asarray([s.user_id for s in starts]))
    return float(probs[:, ::2].sum(axis=1).mean())


def test_pretraining_distils_the_judges_preference(tmp_path: Path) -> None:
    starts = [StartState(u, (u % N_ITEMS, (3 * u + 1) % N_ITEMS)) for u in range(16)]
    # Algorithm 1 as written: candidates sampled from the actor, no listwise step.
    cfg = PretrainConfig(epochs=6, horizon=5, k=5, num_parallel=8, batch_size=32,
                         updates_per_step=4, warmup=32, log_every=5, seed=0,
                         a2c={"lr": 3e-3}, candidates="sample", listwise=0.0)
    judge = EvenItemJudge()
    before = _even_mass(init_policy(_config(), seed=0), starts)
    result = pretrain_ialp(judge, starts, _config(), cfg, progress=False)
    after = _even_mass(result.policy, starts)
    assert after > before + 0.15, (before, after)

    s = result.summary
    asked = 6 * 2 * 5 * 8
    assert s["steps"] == 6 * 2 * 5 and sum(s["answers"].values()) == asked
    # Unparseable replies are skipped, never stored as transitions.
    assert s["transitions"] == asked - s["answers"]["unparseable"]
    assert s["answers"]["unparseable"] > 0 and s["answers"]["none"] >= 0
    assert s["updates"] == result.policy.version > 0
    # Candidates are k distinct items, never already in the state.
    for r in judge.seen:
        assert len(set(r.candidates)) == 5 and not set(r.candidates) & set(r.history)
    # Each step appends the chosen item: states grow by one per step of an episode.
    lengths = sorted({len(r.history) for r in judge.seen})
    assert lengths == [2, 3, 4, 5, 6]
    assert result.log and {"loss", "actor_loss", "critic_loss", "select_rate"} <= set(
        result.log[-1])

    path = save_pretrain(result, tmp_path / "run", {"env": "toy"})
    loaded = load_checkpoint(path, expected_num_items=N_ITEMS)
    assert loaded.version == result.policy.version
    assert loaded.metadata["pretrain"]["judge"] == "even"
    # Trained on candidates outside the state, the policy acts the same way.
    assert loaded.exploration.mask_history and result.policy.exploration.mask_history
    assert _even_mass(loaded, starts) == pytest.approx(after, abs=1e-9)
    assert (tmp_path / "run" / "pretrain.json").is_file()


def test_transitions_follow_eq3(tmp_path: Path) -> None:
    """r^p = 1 for a selected item and 0 for None (then the action is a random candidate)."""
    from trainer.learners.a2c import A2CConfig, A2CLearner

    class Recorder(A2CLearner):
        def __init__(self) -> None:
            super().__init__(_config(), A2CConfig(), seed=0)
            self.rewards: list[float] = []
            self.actions: list[int] = []

        def update(self, batch):  # type: ignore[no-untyped-def]
            self.rewards += batch.rewards.tolist()
            self.actions += batch.actions.tolist()
            return super().update(batch)

    rec = Recorder()
    starts = [StartState(u, (u,)) for u in range(8)]
    cfg = PretrainConfig(epochs=2, horizon=3, k=3, num_parallel=8, batch_size=64,
                         updates_per_step=1, warmup=1, seed=1, candidates="sample",
                         listwise=0.0)
    pretrain_ialp(EvenItemJudge(), starts, _config(), cfg, progress=False, learner=rec)
    pairs = set(zip(rec.actions, rec.rewards, strict=True))
    assert {r for _, r in pairs} <= {0.0, 1.0}
    # Selected (r = 1) actions are always even: the judge's choice was executed.
    assert all(a % 2 == 0 for a, r in pairs if r == 1.0)
    # A None (r = 0) action is a random candidate, which here can only be odd.
    assert all(a % 2 == 1 for a, r in pairs if r == 0.0)


def test_rejected_candidates_are_stored_with_zero_reward(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``rejected="zero"``: one answer stores every candidate; the pick alone earns r^p = 1,
    and the other candidates are stored from the same state with r^p = 0."""
    from trainer.replay import ReplayBuffer

    starts = [StartState(u, (u % N_ITEMS,)) for u in range(8)]
    base = dict(epochs=1, horizon=2, k=4, num_parallel=8, batch_size=8, updates_per_step=1,
                warmup=10_000, seed=3)  # no updates: the buffer is what was stored
    seen: dict[str, ReplayBuffer] = {}
    original = ReplayBuffer.__init__

    def spy(self: ReplayBuffer, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        seen["buffer"] = self

    monkeypatch.setattr(ReplayBuffer, "__init__", spy)
    drop = pretrain_ialp(EvenItemJudge(), starts, _config(),
                         PretrainConfig(**base), progress=False)  # type: ignore[arg-type]
    zero = pretrain_ialp(EvenItemJudge(), starts, _config(),
                         PretrainConfig(**base, rejected="zero"),  # type: ignore[arg-type]
                         progress=False)
    answered = sum(v for k, v in zero.summary["answers"].items() if k != "unparseable")
    assert drop.summary["answers"] == zero.summary["answers"]  # same seed, same episodes
    assert drop.summary["transitions"] == answered
    assert zero.summary["transitions"] == answered * 4  # every candidate of every answer
    buf = seen["buffer"]
    n = len(buf)
    assert n == zero.summary["transitions"]
    rewards, actions = buf._reward[:n], buf._action[:n]
    hist, nxt = buf._hist[:n], buf._next[:n]
    # Only the judge's picks (even items) carry r^p = 1, one per answer naming an item;
    # every rejected candidate has 0.
    assert (actions[rewards == 1.0] % 2 == 0).all()
    assert (rewards == 1.0).sum() == zero.summary["answers"]["item"]
    assert (rewards == 0.0).sum() == n - zero.summary["answers"]["item"]
    # Each stored transition's next state is its state followed by its own action.
    assert (nxt[:, -1] == actions).all() and (nxt[:, -2] == hist[:, -1]).all()
    with pytest.raises(ValueError, match="rejected"):
        PretrainConfig(rejected="maybe")


def test_listwise_distillation_alone_teaches_the_judges_pick() -> None:
    """``listwise`` > 0 with no A2C update at all: the imitation steps alone move the
    actor's mass to the items the judge picks (even ones); without them nothing moves."""
    starts = [StartState(u, (u % N_ITEMS, (3 * u + 1) % N_ITEMS)) for u in range(16)]
    base = dict(epochs=6, horizon=4, k=4, num_parallel=16, batch_size=16, updates_per_step=0,
                warmup=1, seed=5, anchor=0.0, candidates="sample")
    start = init_policy(_config(), seed=5)
    off = pretrain_ialp(EvenItemJudge(), starts, _config(),
                        PretrainConfig(**base, listwise=0.0),  # type: ignore[arg-type]
                        progress=False)
    on = pretrain_ialp(EvenItemJudge(), starts, _config(),
                       PretrainConfig(**base, listwise=1.0),  # type: ignore[arg-type]
                       progress=False)
    assert off.summary["updates"] == on.summary["updates"] == 0
    assert off.summary["listwise_steps"] == 0 < on.summary["listwise_steps"]
    before = _even_mass(start, starts)
    assert _even_mass(off.policy, starts) == pytest.approx(before, abs=1e-6)
    assert _even_mass(on.policy, starts) > before + 0.15
    assert any("listwise_loss" in rec for rec in on.log)
    with pytest.raises(ValueError, match="listwise"):
        PretrainConfig(listwise=-1.0)
