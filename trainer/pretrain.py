"""iALP pre-training (Algorithm 1): an A2C policy learned from a preference judge only.

For B users side by side, each step t of an episode:

1. the actor of πθ samples k distinct candidate items a^k_t for the state x_1:t
   (categorical sampling without replacement, or its top-k: ``candidates``);
2. the judge is asked the Table 1 prompt p(s_t, a^k_t) (eq. 2);
3. an answer naming a candidate makes it the action a_t with r^p = 1; an answer of None
   makes a random candidate the action with r^p = 0 (eq. 3);
4. (x_1:t, a_t, r^p, x_1:t+1) is stored in D_LLM and the next state appends a_t;
5. A2C (eqs. 6–10) is updated on minibatches sampled from D_LLM.

One addition (``anchor``, default 0.1): the A2C loss also carries KL(π₀ ‖ πθ) to the
policy pre-training started from, when that policy has a popularity prior (item
features). The judge's preference then corrects the operator's prior instead of erasing
it (docs/learning-core.md).

No simulator reward or leave rule is used: episodes start from the users' initial
histories and run ``horizon`` steps. An unparseable reply is never guessed: by default
(``unparseable="skip"``) its step stores no transition and the episode continues with a
random candidate, so the state still moves on; ``"none"`` treats it as None instead.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from policy.checkpoint import save_checkpoint
from policy.config import PolicyConfig
from policy.judge.base import BaseJudge
from policy.judge.propose import check_candidate_mode, propose_and_judge
from policy.mixed import MixedPolicy
from policy.types import pad_histories
from trainer.learners import make_learner
from trainer.learners.a2c import A2CLearner
from trainer.learners.base import Learner
from trainer.learners.extremes import MetricExtremes
from trainer.replay import ReplayBuffer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainConfig:
    """Settings of iALP pre-training (Algorithm 1)."""

    epochs: int = 10
    """Passes over the starting users (Algorithm 1's outer iterations)."""
    horizon: int = 20
    """Steps T of each pre-training episode."""
    k: int = 10
    """Candidates per prompt (labels a..j; the next label means None)."""
    num_parallel: int = 64
    """Episodes run side by side; their prompts go to the judge as one batch."""
    candidates: str = "topk"
    """"topk": the k likeliest items; "sample": k items drawn from π(·|s) without
    replacement (Algorithm 1 as written). With ``listwise`` the judge then re-ranks the
    actor's own top k, which is what the greedy policy acts on."""
    exclude_history: bool = True
    """Never offer items already in the state as candidates (the saved policy then masks
    the history when it acts, as it was trained)."""
    unparseable: str = "skip"
    """"skip": store nothing for that step (never guess); "none": treat as a None answer."""
    rejected: str = "drop"
    """What the judge's answer says about the candidates it did not pick. ``"drop"``:
    nothing (Algorithm 1: only the acted item is stored). ``"zero"``: each of them is
    stored as well, from the same state with r^p = 0 (and, after a None, every candidate),
    so one answer ranks the whole candidate list: the picked item above the k − 1 others."""
    listwise: float = 1.0
    """Weight of a listwise distillation step after each judged step (0 = off, Algorithm 1
    as written): for every answer that picked a candidate, the actor's softmax restricted
    to the k candidates is pulled towards the pick (``A2CLearner.imitate``). Algorithm 1's
    reward r^p says only "some candidate was picked" (≈ 1 on almost every step); this
    uses which one. Measured (suite budget, 3 seeds, greedy R@0 over 100 test episodes;
    docs/judge.md): Industry 33.9 → 67.8, Coat 15.1 → 29.4, LFM 35.7 → 44.1."""
    batch_size: int = 64
    """Minibatch size sampled from D_LLM."""
    updates_per_step: int = 4
    """A2C updates after each batched step (once D_LLM holds ``warmup`` transitions)."""
    warmup: int = 256
    """Transitions in D_LLM before the first update."""
    buffer_capacity: int = 200_000
    """Capacity of D_LLM (oldest transitions are dropped first)."""
    log_every: int = 50
    """Batched steps between log records."""
    seed: int = 0
    """Seeds the network, candidate sampling, None fallbacks and minibatches."""
    a2c: dict[str, Any] = field(default_factory=dict)
    """A2C hyperparameters (fields of trainer.learners.a2c.A2CConfig)."""
    anchor: float = 0.1
    """Weight of KL(π₀ ‖ πθ) to the starting policy π₀ (A2C's ``anchor``) when the network
    has a popularity prior (item features with ``prior_scale`` ≠ 0), unless ``a2c`` sets
    its own. Without it a few dozen judge updates erase the prior (LFM: greedy R@0 43.0 →
    9.9); with it the judge's preference corrects the prior. Without a prior π₀ is close to
    uniform and there is nothing to keep: no anchor. 0 = Algorithm 1 as written."""

    def learner_hyper(self, policy_config: PolicyConfig | None = None) -> dict[str, Any]:
        """Keyword arguments of the A2C learner: ``a2c`` plus the ``anchor`` (only for a
        ``policy_config`` with a popularity prior; always when none is given)."""
        has_prior = policy_config is None or (policy_config.item_features > 0
                                               and policy_config.prior_scale != 0)
        return {"anchor": self.anchor if has_prior else 0.0, **self.a2c}

    def __post_init__(self) -> None:
        check_candidate_mode(self.candidates)
        if self.unparseable not in ("skip", "none"):
            raise ValueError(f"unparseable must be 'skip' or 'none', not {self.unparseable!r}")
        if self.rejected not in ("drop", "zero"):
            raise ValueError(f"rejected must be 'drop' or 'zero', not {self.rejected!r}")
        if min(self.epochs, self.horizon, self.k, self.num_parallel, self.batch_size) < 1:
            raise ValueError("epochs, horizon, k, num_parallel and batch_size must be >= 1")
        if self.updates_per_step < 0 or self.warmup < 0:
            raise ValueError("updates_per_step and warmup must be >= 0")
        if self.anchor < 0 or self.listwise < 0:
            raise ValueError("anchor and listwise must be >= 0")


@dataclass
class PretrainResult:
    """The pre-trained policy and what happened on the way."""

    policy: MixedPolicy
    """Inference snapshot of πθ."""
    log: list[dict[str, Any]]
    """Periodic records: step, transitions, losses, judge answer rates."""
    summary: dict[str, Any]
    """Totals: transitions, updates, answer counts, judge stats, seconds."""


@dataclass(frozen=True)
class StartState:
    """Where a pre-training episode starts."""

    user_id: int
    """User id given to the policy (user embedding, if the config has one)."""
    history: tuple[int, ...]
    """Initial history x_1 (possibly several items), oldest first."""


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    if not rows:
        return {}
    # Rows may differ in keys (learner updates and listwise steps log different metrics).
    keys = dict.fromkeys(k for r in rows for k in r)
    return {key: float(np.mean([r[key] for r in rows if key in r])) for key in keys}


def _store_rejected(buffer: ReplayBuffer, candidates: Sequence[Sequence[int]],
                    actions: np.ndarray, keep: Sequence[int], before: np.ndarray,
                    users: Sequence[int], histories: Sequence[Sequence[int]],
                    max_len: int) -> int:
    """Store every candidate of the ``keep`` rows other than the acted item with r^p = 0
    (from the same state; the next state appends that candidate); returns how many."""
    rows: list[int] = []
    items: list[int] = []
    for b in keep:
        for item in candidates[b]:
            if int(item) != int(actions[b]):
                rows.append(b)
                items.append(int(item))
    if not rows:
        return 0
    idx = np.asarray(rows)
    # ``histories`` already end with the acted item: swap it for the rejected one.
    nexts = pad_histories([[*histories[b][:-1], it]
                           for b, it in zip(rows, items, strict=True)], max_len)
    buffer.add_arrays(
        histories=before[idx], user_ids=np.asarray(users)[idx],
        actions=np.asarray(items, dtype=np.int64), rewards=np.zeros(len(idx), np.float32),
        next_histories=nexts, dones=np.zeros(len(idx), dtype=np.float32),
    )
    return len(idx)


def pretrain_ialp(
    judge: BaseJudge,
    starts: Sequence[StartState],
    policy_config: PolicyConfig,
    config: PretrainConfig | None = None,
    *,
    progress: bool = True,
    learner: Learner | None = None,
) -> PretrainResult:
    """Run Algorithm 1 with ``judge`` from ``starts``; returns πθ and the training log."""
    from tqdm import tqdm

    cfg = config or PretrainConfig()
    if not starts:
        raise ValueError("no start states")
    n_items = policy_config.num_items
    if cfg.k + (policy_config.max_len if cfg.exclude_history else 0) > n_items:
        log.warning("catalogue of %d items is small for k=%d with history exclusion", n_items,
                    cfg.k)
    learner = learner or make_learner("a2c", policy_config, seed=cfg.seed,
                                      **cfg.learner_hyper(policy_config))
    imitator = learner if isinstance(learner, A2CLearner) else None
    if cfg.listwise > 0 and imitator is None:
        raise ValueError(f"listwise distillation needs an A2C learner (A2CLearner.imitate); "
                         f"{type(learner).__name__} has none")
    buffer = ReplayBuffer(cfg.buffer_capacity, policy_config.max_len)
    rng = np.random.default_rng(cfg.seed)
    chunks_per_epoch = -(-len(starts) // cfg.num_parallel)
    total_steps = cfg.epochs * chunks_per_epoch * cfg.horizon
    counts = {"item": 0, "none": 0, "unparseable": 0}
    records: list[dict[str, Any]] = []
    window_losses: list[dict[str, float]] = []
    extremes = MetricExtremes()
    window = {"item": 0, "none": 0, "unparseable": 0}
    updates = transitions = step = listwise_steps = 0
    started = time.perf_counter()
    bar = tqdm(total=total_steps, desc="iALP pre-training", unit="step", disable=not progress)
    for epoch in range(cfg.epochs):
        order = rng.permutation(len(starts))
        for c in range(chunks_per_epoch):
            rows = [starts[i] for i in order[c * cfg.num_parallel : (c + 1) * cfg.num_parallel]]
            users = [s.user_id for s in rows]
            histories = [list(s.history) for s in rows]
            for _t in range(cfg.horizon):
                choice = propose_and_judge(
                    learner.acting_policy(), judge, histories, k=cfg.k, mode=cfg.candidates,
                    exclude=histories if cfg.exclude_history else None, user_ids=users,
                    rng=rng)
                actions = choice.items
                keep: list[int] = []
                rewards = np.zeros(len(rows), dtype=np.float32)
                for b, ans in enumerate(choice.answers):
                    kind = ans.kind
                    counts[kind] += 1
                    window[kind] += 1
                    if kind == "unparseable" and cfg.unparseable == "none":
                        kind = "none"
                    if kind == "item":
                        rewards[b] = 1.0  # r^p of eq. 3; None → r^p = 0
                    if kind != "unparseable":
                        keep.append(b)
                before = pad_histories(histories, policy_config.max_len)
                for b in range(len(rows)):
                    histories[b].append(int(actions[b]))
                after = pad_histories(histories, policy_config.max_len)
                if keep:
                    idx = np.asarray(keep)
                    buffer.add_arrays(
                        histories=before[idx], user_ids=np.asarray(users)[idx],
                        actions=actions[idx], rewards=rewards[idx], next_histories=after[idx],
                        # Episodes are cut at the horizon, users never leave: bootstrap.
                        dones=np.zeros(len(idx), dtype=np.float32),
                    )
                    transitions += len(idx)
                picked = [b for b, ans in enumerate(choice.answers)
                          if ans.kind == "item" and ans.index is not None]
                if imitator is not None and cfg.listwise > 0 and picked and \
                        len(buffer) >= max(cfg.warmup, 1):
                    idx = np.asarray(picked)
                    metrics = imitator.imitate(
                        before[idx], np.asarray(users)[idx],
                        np.asarray([choice.candidates[b] for b in picked], dtype=np.int64),
                        np.asarray([choice.answers[b].index for b in picked], dtype=np.int64),
                        weight=cfg.listwise)
                    window_losses.append(metrics)
                    extremes.add(metrics)
                    listwise_steps += 1
                if cfg.rejected == "zero" and keep:
                    transitions += _store_rejected(buffer, choice.candidates, actions, keep,
                                                   before, users, histories,
                                                   policy_config.max_len)
                if len(buffer) >= max(cfg.warmup, 1):
                    for _ in range(cfg.updates_per_step):
                        metrics = learner.update(buffer.sample(cfg.batch_size, rng))
                        window_losses.append(metrics)
                        extremes.add(metrics)
                        updates += 1
                step += 1
                bar.update(1)
                if step % cfg.log_every == 0 or step == total_steps:
                    asked = max(sum(window.values()), 1)
                    rec = {
                        "step": step, "epoch": epoch, "transitions": transitions,
                        "updates": updates, "seconds": time.perf_counter() - started,
                        "select_rate": window["item"] / asked,
                        "none_rate": window["none"] / asked,
                        "unparseable_rate": window["unparseable"] / asked,
                        **_mean(window_losses),
                    }
                    records.append(rec)
                    if window_losses:
                        shown = rec.get("loss", rec.get("listwise_loss", float("nan")))
                        bar.set_postfix(loss=f"{shown:.3f}", sel=f"{rec['select_rate']:.2f}")
                    window_losses = []
                    window = {"item": 0, "none": 0, "unparseable": 0}
    bar.close()
    snap = learner.snapshot()
    if cfg.exclude_history:
        # The actor only ever learned to rank items outside the state: it acts that way.
        snap.exploration = replace(snap.exploration, mask_history=True)
    asked = max(sum(counts.values()), 1)
    bad_rate = counts["unparseable"] / asked
    summary: dict[str, Any] = {
        "steps": step, "transitions": transitions, "updates": updates,
        "listwise_steps": listwise_steps,
        "answers": dict(counts), "select_rate": counts["item"] / asked,
        "none_rate": counts["none"] / asked, "unparseable_rate": counts["unparseable"] / asked,
        "judge": judge.name, "judge_stats": judge.stats.as_dict(),
        "seconds": time.perf_counter() - started, "config": asdict(cfg),
        # Largest |loss| and |Q| of any update, not only the logged window means.
        "extremes": extremes.as_dict(),
    }
    if bad_rate > 0.5:
        log.warning(
            "%.0f%% of the judge's replies were unparseable and were not learned from; check "
            "the model, adapter and template (ialp llm report shows the replies' fate)",
            100 * bad_rate,
        )
    snap.metadata["pretrain"] = {
        "algorithm": "iALP (Algorithm 1)", "judge": judge.name,
        "judge_fingerprint": judge.cache_identity()[:500],
        "transitions": transitions, "select_rate": summary["select_rate"],
        "none_rate": summary["none_rate"],
    }
    return PretrainResult(policy=snap, log=records, summary=summary)


def save_pretrain(result: PretrainResult, out_dir: str | Path,
                  extra: dict[str, Any] | None = None) -> Path:
    """Write the checkpoint to ``out_dir/policy`` and the JSON log to ``out_dir/pretrain.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = save_checkpoint(result.policy, out / "policy")
    doc = {"summary": result.summary, "log": result.log, "checkpoint": str(path),
           "version": result.policy.version, **(extra or {})}
    (out / "pretrain.json").write_text(json.dumps(doc, indent=2, sort_keys=True, default=str)
                                       + "\n", encoding="utf-8")
    return path


__all__ = ["PretrainConfig", "PretrainResult", "StartState", "pretrain_ialp",
           "save_pretrain"]
