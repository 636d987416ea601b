"""LAAC's offline training: the critic and actor losses of one gradient step, the held-out
cross-entropy that selects the epoch, the anchoring gap it reports, and
:func:`train_laac`, which runs it all and returns the actor as a plain policy."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from policy.actor_critic import ActorCritic
from policy.checkpoint import build_network
from policy.config import PolicyConfig
from policy.item_features import ItemFeatures, item_counts
from policy.judge.base import BaseJudge
from policy.mixed import MixedPolicy
from trainer.laac.config import LAACConfig
from trainer.laac.data import (
    LLMDataset,
    LoggedTransitions,
    NegativeSampler,
    build_llm_dataset,
    logged_transitions,
)
from trainer.learners.base import NonFiniteLossError, soft_update
from trainer.learners.extremes import MetricExtremes

log = logging.getLogger(__name__)

_MASKED = -1e9  # logit of a masked item: softmax weight 0, yet finite (no NaN in π·log π)


# -- training ---------------------------------------------------------------------------------
def _history_mask(histories: torch.Tensor, num_items: int) -> torch.Tensor:
    """[B, I] bool, True for items in each state."""
    mask = torch.zeros(histories.shape[0], num_items + 1, dtype=torch.bool)
    mask.scatter_(1, torch.where(histories < 0, num_items, histories), True)
    return mask[:, :num_items]


def _policy_probs(logits: torch.Tensor, mask: torch.Tensor | None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(π [B, I], log π [B, I]) with masked items at probability 0."""
    if mask is not None:
        logits = logits.masked_fill(mask, _MASKED)
    logp = F.log_softmax(logits, dim=-1)
    return logp.exp(), logp


@dataclass
class _Batch:
    """Tensors of one gradient step (B logged states first, then B_L D_LLM states)."""

    states: torch.Tensor  # [B + B_L, L]
    users: torch.Tensor  # [B + B_L]
    refs: torch.Tensor  # [B + B_L] a_ref: logged action, then a_LLM
    next_states: torch.Tensor  # [B, L]
    next_users: torch.Tensor  # [B]
    dones: torch.Tensor  # [B]
    negatives: torch.Tensor  # [B, N]
    llm_data: torch.Tensor  # [B_L] a_data of the D_LLM states
    n_data: int  # B


def _laac_step(net: ActorCritic, target: ActorCritic, b: _Batch, cfg: LAACConfig
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """The summed loss (critic + actor; the detaches keep each on its own player) and
    its metrics."""
    n_items = net.config.num_items
    nd = b.n_data
    state = net.encode(b.states, b.users)  # [B + B_L, H]
    q = net.critic(state)  # [B + B_L, I]
    mask = _history_mask(b.states, n_items) if cfg.mask_history else None
    if mask is not None:
        # The reference action stays allowed (a logged repeat consumption may be in s).
        mask[torch.arange(len(b.refs)), b.refs] = False
    pi, logp = _policy_probs(net.actor(state), mask)  # [B + B_L, I] each
    q_ref = q.gather(1, b.refs[:, None]).squeeze(1)  # [B + B_L]

    # Relative pessimism: f under π (detached) against f at the reference action.
    pessimism = ((pi.detach() * q).sum(-1) - q_ref).mean()

    # Bellman term on logged actions (r = 1) and negatives (r = 0, terminal).
    with torch.no_grad():
        t_state = target.encode(b.next_states, b.next_users)  # [B, H]
        t_mask = _history_mask(b.next_states, n_items) if cfg.mask_history else None
        t_pi, _ = _policy_probs(target.actor(t_state), t_mask)  # [B, I]
        v_next = (t_pi * target.critic(t_state)).sum(-1)  # [B]
        y = (1.0 + cfg.gamma * (1.0 - b.dones) * v_next).clamp(0.0, 1.0 / (1.0 - cfg.gamma))
    q_pos = q_ref[:nd]  # [B]
    err = [(q_pos - y) ** 2]
    if b.negatives.shape[1]:
        err.append((q[:nd].gather(1, b.negatives) ** 2).flatten())  # target 0
    bellman = torch.cat(err).mean()

    # Anchoring: unexplored suggestions valued like the logged action at that state.
    q_llm, q_llm_data = q_ref[nd:], q[nd:].gather(1, b.llm_data[:, None]).squeeze(1)
    unexplored = b.refs[nd:] != b.llm_data  # [B_L]
    if bool(unexplored.any()):
        anchor = ((q_llm - q_llm_data.detach())[unexplored] ** 2).mean()
    else:
        anchor = q.new_zeros(())
    critic_loss = cfg.pessimism * pessimism + cfg.beta * bellman + cfg.lam * anchor

    # Actor: maximise f (detached) under π, plus entropy and cross-entropy to a_ref.
    value = (pi * q.detach()).sum(-1).mean()
    entropy = -(pi * logp).sum(-1).mean()
    bc = -logp.gather(1, b.refs[:, None]).mean()
    actor_loss = -value - cfg.entropy_coef * entropy + cfg.bc_coef * bc

    loss = critic_loss + actor_loss
    with torch.no_grad():
        metrics = {
            "loss": float(loss), "critic_loss": float(critic_loss),
            "actor_loss": float(actor_loss), "pessimism": float(pessimism),
            "bellman": float(bellman), "anchor": float(anchor), "bc": float(bc),
            "entropy": float(entropy), "q_mean": float(q_pos.mean()),
            "q_abs_max": float(q.abs().max()), "target_mean": float(y.mean()),
            "pi_value": float(value),
        }
    return loss, metrics


def _finite_or_raise(metrics: Mapping[str, float], epoch: int, step: int) -> None:
    bad = [k for k, v in metrics.items() if not np.isfinite(v)]
    if bad:
        raise NonFiniteLossError(
            f"LAAC: non-finite {', '.join(bad)} at epoch {epoch}, step {step}; lower "
            "lr_critic or pessimism, or raise beta (the Bellman term bounds the critic)")


@torch.no_grad()
def heldout_cross_entropy(net: ActorCritic, data: LoggedTransitions, *, mask_history: bool,
                          chunk: int = 1024) -> float:
    """Mean next-item cross-entropy of the actor on ``data`` (masked as in training)."""
    was_training = net.training
    net.eval()
    total = 0.0
    for start in range(0, len(data), chunk):
        h = torch.as_tensor(data.histories[start:start + chunk])
        a = torch.as_tensor(data.actions[start:start + chunk])
        mask = _history_mask(h, net.config.num_items) if mask_history else None
        if mask is not None:
            mask[torch.arange(len(a)), a] = False
        _, logp = _policy_probs(net.logits(h, torch.as_tensor(
            data.user_ids[start:start + chunk])), mask)  # [b, I]
        total += float(-logp.gather(1, a[:, None]).sum())
    net.train(was_training)
    return total / max(len(data), 1)


@torch.no_grad()
def anchoring_gap(net: ActorCritic, d_llm: LLMDataset, chunk: int = 512) -> dict[str, float]:
    """Over the unexplored D_LLM states: mean |f(s,a_LLM) − f(s,a_data)| (``gap``), the
    signed mean (``excess``: how much more the suggestion is worth), and the count."""
    was_training = net.training
    net.eval()
    rows = np.flatnonzero(d_llm.unexplored)
    diffs: list[np.ndarray] = []
    for start in range(0, len(rows), chunk):
        r = rows[start:start + chunk]
        q = net.q_values(torch.as_tensor(d_llm.histories[r]),
                         torch.as_tensor(d_llm.user_ids[r]))  # [b, I]
        a_llm = torch.as_tensor(d_llm.llm_actions[r])[:, None]
        a_data = torch.as_tensor(d_llm.data_actions[r])[:, None]
        diffs.append((q.gather(1, a_llm) - q.gather(1, a_data)).squeeze(1).numpy())
    net.train(was_training)
    d = np.concatenate(diffs) if diffs else np.zeros(0)
    return {"gap": float(np.abs(d).mean()) if len(d) else 0.0,
            "excess": float(d.mean()) if len(d) else 0.0, "states": len(d)}


def train_laac(
    logs: Sequence[Any],
    users: Sequence[int],
    policy_config: PolicyConfig,
    *,
    seed: int,
    judge: BaseJudge,
    item_features: ItemFeatures | None = None,
    config: LAACConfig | None = None,
    progress: bool = True,
    dllm_cache: Path | None = None,
    cache_tag: str = "",
) -> tuple[MixedPolicy, dict[str, Any]]:
    """Train LAAC on ``logs`` (one sequence per user of ``users``) with ``judge`` as the
    reference policy; returns the actor as a plain policy and a report (per-epoch
    losses, seconds, D_LLM size, unexplored share, anchoring gap, extremes).

    ``dllm_cache``: a folder where D_LLM is cached under ``cache_tag`` (e.g. the
    environment's name); None = ask the judge every time. The same ``seed`` gives the
    same policy. Raises :class:`NonFiniteLossError` when a loss stops being finite."""
    from tqdm import tqdm

    cfg = config or LAACConfig()
    started = time.perf_counter()
    n_items, max_len = policy_config.num_items, policy_config.max_len
    rng = np.random.default_rng(np.random.SeedSequence([seed, 83]))
    order = rng.permutation(len(logs))
    n_hold = round(cfg.holdout * len(logs)) if len(logs) > 1 else 0
    hold, fit = np.sort(order[:n_hold]), np.sort(order[n_hold:])
    fit_logs = [logs[i] for i in fit]
    data = logged_transitions(fit_logs, [users[i] for i in fit], max_len)
    held = logged_transitions([logs[i] for i in hold], [users[i] for i in hold], max_len)
    if not len(data):
        raise ValueError("the training logs hold no (state, next item) pair")
    # Counts of every training log: operator information, like the item features.
    counts = item_counts(logs, n_items)  # [I]
    d_llm, llm_info = build_llm_dataset(
        data, judge, counts, llm_states=cfg.llm_states, k=cfg.k, seed=seed,
        cache_dir=dllm_cache, cache_tag=cache_tag, progress=progress)
    neg_weights = None if cfg.negative_sampling == "uniform" else counts + 1.0
    sampler = NegativeSampler(fit_logs, n_items, neg_weights)
    extremes = MetricExtremes()
    epochs: list[dict[str, float]] = []
    per_epoch = min(cfg.max_examples, len(data))
    steps_per_epoch = -(-per_epoch // cfg.batch_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout draws
        net = build_network(policy_config, seed=seed, item_features=item_features)
        target = copy.deepcopy(net)
        target.eval()
        target.requires_grad_(False)
        actor_params = list(net.actor.parameters())
        actor_ids = {id(p) for p in actor_params}
        rest = [p for p in net.parameters() if id(p) not in actor_ids]
        opt = torch.optim.Adam([{"params": actor_params, "lr": cfg.lr_actor},
                                {"params": rest, "lr": cfg.lr_critic}])
        bar = tqdm(total=cfg.epochs * steps_per_epoch, desc="LAAC offline training",
                   unit="step", disable=not progress)
        step = 0
        best_state, best_ce, best_epoch = copy.deepcopy(net.state_dict()), np.inf, 0
        for epoch in range(1, cfg.epochs + 1):
            net.train()
            ep_started = time.perf_counter()
            idx = rng.permutation(len(data))[:per_epoch]
            rows: list[dict[str, float]] = []
            for s in range(0, len(idx), cfg.batch_size):
                bi = idx[s:s + cfg.batch_size]
                li = (rng.integers(len(d_llm), size=cfg.llm_batch_size) if len(d_llm)
                      else np.zeros(0, dtype=np.int64))
                negs = (sampler.sample(data.sequences[bi], cfg.negatives, rng)
                        if cfg.negatives else np.zeros((len(bi), 0), dtype=np.int64))
                batch = _Batch(
                    states=torch.as_tensor(np.concatenate([data.histories[bi],
                                                           d_llm.histories[li]])),
                    users=torch.as_tensor(np.concatenate([data.user_ids[bi],
                                                          d_llm.user_ids[li]])),
                    refs=torch.as_tensor(np.concatenate([data.actions[bi],
                                                         d_llm.llm_actions[li]])),
                    next_states=torch.as_tensor(data.next_histories[bi]),
                    next_users=torch.as_tensor(data.user_ids[bi]),
                    dones=torch.as_tensor(data.dones[bi]),
                    negatives=torch.as_tensor(negs),
                    llm_data=torch.as_tensor(d_llm.data_actions[li]),
                    n_data=len(bi),
                )
                loss, metrics = _laac_step(net, target, batch, cfg)
                _finite_or_raise(metrics, epoch, step)
                opt.zero_grad()
                loss.backward()
                if cfg.grad_clip > 0:
                    norm = torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
                    metrics["grad_norm"] = float(norm)
                    _finite_or_raise({"grad_norm": metrics["grad_norm"]}, epoch, step)
                opt.step()
                soft_update(target, net, cfg.tau)
                extremes.add(metrics)
                rows.append(metrics)
                step += 1
                bar.update(1)
                if step % 20 == 0:
                    bar.set_postfix(critic=f"{metrics['critic_loss']:.3f}",
                                    bc=f"{metrics['bc']:.2f}")
            rec = {"epoch": float(epoch), "seconds": time.perf_counter() - ep_started,
                   **{k: float(np.mean([r[k] for r in rows])) for k in rows[0]}}
            if len(held):
                rec["holdout_ce"] = heldout_cross_entropy(net, held,
                                                          mask_history=cfg.mask_history)
            epochs.append(rec)
            log.info("LAAC epoch %d: %s", epoch,
                     ", ".join(f"{k} {v:.4g}" for k, v in rec.items() if k != "epoch"))
            if not len(held):
                best_epoch = epoch  # no hold-out: the last epoch is kept
            elif rec["holdout_ce"] < best_ce:
                best_state, best_ce, best_epoch = (copy.deepcopy(net.state_dict()),
                                                   rec["holdout_ce"], epoch)
            elif epoch - best_epoch >= cfg.patience:
                break
        bar.close()
    if len(held):
        net.load_state_dict(best_state)
    net.eval()
    gap = anchoring_gap(net, d_llm)
    unexplored = float(d_llm.unexplored.mean()) if len(d_llm) else 0.0
    report: dict[str, Any] = {
        "algorithm": "LAAC (offline, ATAC-style relative pessimism + anchoring)",
        "transitions": len(data), "holdout_transitions": len(held), "steps": step,
        "epochs": epochs, "best_epoch": best_epoch,
        "best_holdout_ce": float(best_ce) if len(held) else None,
        "dllm_size": len(d_llm), "dllm_asked": d_llm.asked, "dllm_answers": d_llm.answers,
        "dllm_cached": llm_info["cached"], "dllm_path": llm_info["path"],
        "dllm_seconds": llm_info["seconds"], "unexplored_share": unexplored,
        "anchoring_gap": gap["gap"], "anchoring_excess": gap["excess"],
        "judge": judge.name, "judge_identity": judge.cache_identity()[:500],
        "judge_stats": judge.stats.as_dict(),
        "seconds": time.perf_counter() - started, "config": asdict(cfg),
        # Largest |loss| and |Q| of any step (the suite's stability check reads them).
        "extremes": extremes.as_dict(),
        "updates": step,
    }
    policy = MixedPolicy(net, version=0, seed=seed, metadata={
        "trained": "LAAC offline", "judge": judge.name, "dllm_size": len(d_llm),
        "anchoring_gap": gap["gap"], "config": asdict(cfg)})
    if cfg.mask_history:
        # π learned to rank items outside the state only: it acts that way.
        policy.exploration = replace(policy.exploration, mask_history=True)
    return policy, report
