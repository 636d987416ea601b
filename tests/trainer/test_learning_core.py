"""Item features, factorised heads and learner stability (docs/learning-core.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policy.checkpoint import init_policy, load_checkpoint, save_checkpoint
from policy.config import PolicyConfig
from policy.item_features import build_item_features, cooccurrence_embeddings
from policy.types import Transition
from trainer.learners import NonFiniteLossError, make_learner
from trainer.replay import ReplayBuffer

N_ITEMS = 30
# Items 0..19 appear in the training logs in two groups that co-occur; 20..29 never do.
LOGS = [[i % 10, (i + 1) % 10, (i + 2) % 10] for i in range(40)] + \
       [[10 + i % 10, 10 + (i + 1) % 10, 10 + (i + 3) % 10] for i in range(20)]


def _features():  # type: ignore[no-untyped-def]
    return build_item_features(LOGS, N_ITEMS, cooc_dim=4)


def _config(dim: int, **kw: object) -> PolicyConfig:
    return PolicyConfig(num_items=N_ITEMS, max_len=5, hidden=16, heads=2, blocks=1,
                        item_features=dim, **kw)  # type: ignore[arg-type]


def _batch(n: int, actions: list[int], rewards: list[float]) -> object:
    buf = ReplayBuffer(64, 5)
    buf.add_transitions([
        Transition(event_id=str(i), user_id=0, history=(1, 2), action=actions[i % len(actions)],
                   reward=rewards[i % len(rewards)], done=False, propensity=1.0 / N_ITEMS)
        for i in range(n)
    ])
    return buf.sample(n, np.random.default_rng(0))


def test_cooccurrence_embeddings_group_items_and_zero_the_unlogged() -> None:
    emb = cooccurrence_embeddings(LOGS, N_ITEMS, dim=4)
    assert emb.shape == (N_ITEMS, 4) and np.isfinite(emb).all()
    assert np.all(emb[20:] == 0)

    def cos(a: int, b: int) -> float:
        return float(emb[a] @ emb[b] / (np.linalg.norm(emb[a]) * np.linalg.norm(emb[b])))

    assert cos(1, 2) > cos(1, 15)


def test_prior_is_log_popularity_of_the_training_logs() -> None:
    feats = _features()
    assert feats.matrix.shape == (N_ITEMS, 5)
    assert feats.prior[:10].min() > feats.prior[20:].max()  # logged items above unlogged


def test_factorised_heads_score_unseen_items_through_their_features() -> None:
    feats = _features()
    cfg = _config(feats.dim, item_ids=False, prior_scale=0.0)
    learner = make_learner("a2c", cfg, seed=0, init=init_policy(cfg, seed=0,
                                                                 item_features=feats))
    net = learner.net  # type: ignore[attr-defined]
    hist = torch.tensor([[1, 2]])
    net.eval()
    with torch.no_grad():
        before = torch.log_softmax(net.logits(hist), -1)[0]
    # Reward only items 0 and 1; item 3 (same co-occurrence group, never taken) must rise
    # relative to item 15 (other group), although neither gets a gradient of its own.
    for _ in range(40):
        learner.update(_batch(32, [0, 1, 12], [5.0, 5.0, 1.0]))  # type: ignore[arg-type]
    net.eval()
    with torch.no_grad():
        after = torch.log_softmax(net.logits(hist), -1)[0]
    assert (after[3] - before[3]) > (after[15] - before[15])


def test_features_travel_in_checkpoints_and_random_beta(tmp_path) -> None:  # type: ignore[no-untyped-def]
    feats = _features()
    cfg = _config(feats.dim)
    theta = init_policy(cfg, seed=0, item_features=feats)
    loaded = load_checkpoint(save_checkpoint(theta, tmp_path / "p"))
    hist = np.array([[-1, 3, 4]])
    assert np.allclose(loaded.probs(hist), theta.probs(hist))
    ap = make_learner("ap", cfg, seed=0, init=theta, beta_init="random")
    beta_items = ap.net.items  # type: ignore[attr-defined]
    assert torch.equal(beta_items.features, theta.theta.items.features)  # type: ignore[union-attr]


def test_plain_ids_remain_selectable() -> None:
    cfg = PolicyConfig(num_items=N_ITEMS, max_len=5, hidden=16, heads=2, blocks=1)
    net = init_policy(cfg, seed=0).theta
    assert net.items is None and net.actor.score.out is not None  # type: ignore[union-attr]


@pytest.mark.parametrize("method", ["a2c", "dqn"])
def test_updates_keep_parameters_finite_with_large_rewards(method: str) -> None:
    feats = _features()
    cfg = _config(feats.dim)
    learner = make_learner(method, cfg, seed=0, init=init_policy(cfg, seed=0,
                                                                 item_features=feats))
    for _ in range(30):
        metrics = learner.update(_batch(32, [0, 5, 9], [1e4, -1e4, 3.0]))  # type: ignore[arg-type]
        assert all(np.isfinite(v) for v in metrics.values())
    net = learner.net  # type: ignore[attr-defined]
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_a2c_targets_stay_within_the_reachable_return() -> None:
    cfg = _config(0)
    learner = make_learner("a2c", cfg, seed=0, gamma=0.9)
    for _ in range(20):
        metrics = learner.update(_batch(32, [0, 5], [5.0, 1.0]))  # type: ignore[arg-type]
    assert metrics["target_mean"] <= 5.0 / (1 - 0.9) + 1e-4


def test_non_finite_loss_stops_with_a_clear_error() -> None:
    cfg = _config(0)
    learner = make_learner("a2c", cfg, seed=0)
    before = [p.detach().clone() for p in learner.net.parameters()]  # type: ignore[attr-defined]
    with pytest.raises(NonFiniteLossError, match="loss is nan"):
        learner.update(_batch(16, [0, 1], [float("nan")]))  # type: ignore[arg-type]
    after = list(learner.net.parameters())  # type: ignore[attr-defined]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def _kl_to_start(start: torch.Tensor, net: torch.nn.Module, hist: torch.Tensor) -> float:
    net.eval()
    with torch.no_grad():
        now = torch.log_softmax(net.logits(hist), -1)  # type: ignore[operator]
    p0 = start.exp()
    return float((p0 * (start - now)).sum(-1).mean())


def test_anchor_keeps_the_popularity_prior_under_a_contrary_signal() -> None:
    """Rewarding only never-logged items pulls π away from the prior; the KL anchor to
    the starting policy keeps most of it (the pre-training default with features)."""
    feats = _features()
    cfg = _config(feats.dim, prior_scale=3.0)
    hist = torch.tensor([[1, 2], [12, 13]])
    kls: dict[float, float] = {}
    corr: dict[float, float] = {}
    for anchor in (0.0, 1.0):
        learner = make_learner("a2c", cfg, seed=0, anchor=anchor,
                               init=init_policy(cfg, seed=0, item_features=feats))
        net = learner.net  # type: ignore[attr-defined]
        net.eval()
        with torch.no_grad():
            start = torch.log_softmax(net.logits(hist), -1)
        for _ in range(60):
            out = learner.update(_batch(32, [25, 26, 5], [1.0, 1.0, 0.0]))  # type: ignore[arg-type]
        assert ("anchor_kl" in out) == (anchor > 0)
        kls[anchor] = _kl_to_start(start, net, hist)
        with torch.no_grad():
            log_pi = torch.log_softmax(net.logits(hist), -1).numpy()
        corr[anchor] = float(np.mean([np.corrcoef(row, feats.prior)[0, 1] for row in log_pi]))
    assert kls[1.0] < 0.5 * kls[0.0], kls
    assert corr[1.0] > corr[0.0] + 0.1, corr  # log π still follows the prior


def test_pretraining_anchor_applies_only_with_a_prior() -> None:
    from trainer.pretrain import PretrainConfig

    cfg = PretrainConfig(anchor=0.3)
    assert cfg.learner_hyper(_config(5, prior_scale=3.0))["anchor"] == 0.3
    assert cfg.learner_hyper(_config(5, prior_scale=0.0))["anchor"] == 0.0
    assert cfg.learner_hyper(_config(0))["anchor"] == 0.0
    assert PretrainConfig(anchor=0.3, a2c={"anchor": 2.0}).learner_hyper(
        _config(5, prior_scale=3.0))["anchor"] == 2.0
    with pytest.raises(ValueError, match="anchor"):
        PretrainConfig(anchor=-1.0)


def test_anchor_mode_picks_the_direction_of_the_kl() -> None:
    """``forward`` is KL(π₀ ‖ π), ``reverse`` KL(π ‖ π₀): they differ for the same π, each
    equals its formula, both are 0 at π = π₀; an unknown mode is refused."""
    feats = _features()
    cfg = _config(feats.dim, prior_scale=3.0)
    hist = torch.tensor([[1, 2], [12, 13]])
    kl: dict[str, float] = {}
    for mode in ("forward", "reverse"):
        learner = make_learner("a2c", cfg, seed=0, anchor=1.0, anchor_mode=mode,
                               init=init_policy(cfg, seed=0, item_features=feats))
        net = learner.net  # type: ignore[attr-defined]
        net.eval()
        with torch.no_grad():
            log_p0 = torch.log_softmax(net.logits(hist), -1)
        log_pi = torch.log_softmax(log_p0 + torch.linspace(0, 3, N_ITEMS), -1)
        got = learner._anchor_kl(hist, None, log_pi, None)  # type: ignore[attr-defined]
        p, p0 = log_pi.exp(), log_p0.exp()
        want = ((p0 * (log_p0 - log_pi)) if mode == "forward" else (p * (log_pi - log_p0)))
        assert float(got) == pytest.approx(float(want.sum(-1).mean()), rel=1e-5)
        assert float(learner._anchor_kl(hist, None, log_p0, None)) == pytest.approx(  # type: ignore[attr-defined]
            0.0, abs=1e-6)
        kl[mode] = float(got)
    assert abs(kl["forward"] - kl["reverse"]) > 1e-3
    with pytest.raises(ValueError, match="anchor_mode"):
        make_learner("a2c", cfg, seed=0, anchor_mode="sideways")


@pytest.mark.parametrize("method", ["a2c", "ap"])
def test_serve_average_snapshots_the_polyak_average(method: str) -> None:
    """With ``serve_average`` the snapshot carries the target network (the Polyak
    average), which lags the live weights; without it, the live weights."""
    feats = _features()
    cfg = _config(feats.dim, prior_scale=3.0)
    hist = torch.tensor([[1, 2], [12, 13]])
    logits: dict[bool, torch.Tensor] = {}
    for average in (False, True):
        init = init_policy(cfg, seed=0, item_features=feats)
        extra = {"beta_init": "copy", "alpha_steps": 1} if method == "ap" else {}
        learner = make_learner(method, cfg, seed=0, init=init, serve_average=average,
                               **extra)  # type: ignore[arg-type]
        for _ in range(20):
            learner.update(_batch(32, [25, 26, 5], [1.0, 1.0, 0.0]))  # type: ignore[arg-type]
        net = learner.snapshot().beta if method == "ap" else learner.snapshot().theta
        assert net is not None
        served = learner.served_network()  # type: ignore[attr-defined]
        expect = learner.target if average else learner.net  # type: ignore[attr-defined]
        assert served is expect
        for a, b in zip(net.state_dict().values(), expect.state_dict().values(), strict=True):
            assert torch.equal(a, b)
        assert all(p.requires_grad for p in net.parameters())  # usable as a learner's init
        net.eval()
        with torch.no_grad():
            logits[average] = net.logits(hist)
    assert not torch.allclose(logits[False], logits[True])
    with pytest.raises(ValueError, match="serve_average"):
        make_learner("a2c", cfg, seed=0, serve_average=True, target_tau=0.0)
