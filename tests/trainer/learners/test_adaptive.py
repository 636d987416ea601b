"""A-iALP learners (Algorithm 2): what each scheme trains, the mixture, the α schedule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from policy.checkpoint import init_policy, policy_from_bytes, policy_to_bytes
from policy.config import PolicyConfig
from policy.mixed import MixedPolicy
from policy.types import Transition
from trainer.batch import TransitionBatch
from trainer.learners import make_learner
from trainer.learners.adaptive import APLearner, FTLearner

CFG = PolicyConfig(num_items=30, max_len=6, hidden=16, heads=2, blocks=1, dropout=0.0)


def _batch(n: int = 48, seed: int = 0) -> TransitionBatch:
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        hist = tuple(int(x) for x in rng.integers(0, CFG.num_items, size=rng.integers(0, 8)))
        action = int(rng.integers(0, CFG.num_items))
        items.append(Transition(event_id=f"e{i}", user_id=0, history=hist, action=action,
                                reward=float(action % 5), done=bool(rng.random() < 0.3)))
    return TransitionBatch.from_transitions(items, CFG.max_len)


def _params(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def _changed(before: list[torch.Tensor], net: torch.nn.Module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


@pytest.fixture()
def theta() -> MixedPolicy:
    return init_policy(CFG, seed=3)


@pytest.mark.parametrize("beta_init", ["copy", "random"])
def test_ap_trains_beta_and_leaves_theta_unchanged(theta: MixedPolicy, beta_init: str) -> None:
    learner = make_learner("ap", CFG, seed=0, init=theta, beta_init=beta_init, lr=3e-3,
                           alpha_start=0.5, alpha_steps=20)
    assert isinstance(learner, APLearner)
    theta_before = _params(learner.theta)
    given_before = _params(theta.theta)
    beta_before = _params(learner.net)
    batch = _batch()
    for _ in range(5):
        learner.update(batch)
    assert not _changed(theta_before, learner.theta)
    assert not _changed(given_before, theta.theta)  # the caller's θ is never touched either
    assert _changed(beta_before, learner.net)
    # θ's parameters are not in the optimizer at all.
    opt_ids = {id(p) for g in learner.optimizer.param_groups for p in g["params"]}
    assert not opt_ids & {id(p) for p in learner.theta.parameters()}
    snap = learner.snapshot()
    assert snap.scheme == "ap" and snap.beta is not None
    for a, b in zip(snap.theta.parameters(), theta.theta.parameters(), strict=True):
        assert torch.equal(a, b)


def test_beta_init_copy_equals_theta_and_random_differs(theta: MixedPolicy) -> None:
    copy_l = make_learner("ap", CFG, seed=0, init=theta, beta_init="copy")
    rand_l = make_learner("ap", CFG, seed=0, init=theta, beta_init="random")
    assert isinstance(copy_l, APLearner) and isinstance(rand_l, APLearner)
    pairs = zip(copy_l.net.parameters(), theta.theta.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    assert _changed(_params(theta.theta), rand_l.net)


def test_ap_actor_gradient_reaches_beta_only_through_the_mixture(theta: MixedPolicy) -> None:
    """With α = 0, π̃ = πθ: the actor loss carries no gradient into β's actor head."""
    learner = make_learner("ap", CFG, seed=0, init=theta, alpha_schedule="constant",
                           alpha_start=0.0)
    assert isinstance(learner, APLearner)
    learner.net.train()
    losses = learner._losses(_batch())
    assert not losses["actor_loss"].requires_grad  # θ's log-probabilities carry no graph
    assert losses["critic_loss"].requires_grad  # β's critic learns from the start
    # With α > 0 it does.
    half = make_learner("ap", CFG, seed=0, init=theta, alpha_schedule="constant",
                        alpha_start=0.5)
    assert isinstance(half, APLearner)
    half.net.train()
    half.optimizer.zero_grad()
    half._losses(_batch())["actor_loss"].backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0
               for p in half.net.actor.parameters())


def test_ft_changes_theta(theta: MixedPolicy) -> None:
    learner = make_learner("ft", CFG, seed=0, init=theta, lr=3e-3)
    assert isinstance(learner, FTLearner)
    before = _params(learner.net)
    for _ in range(3):
        learner.update(_batch())
    assert _changed(before, learner.net)
    snap = learner.snapshot()
    assert snap.scheme == "ft" and snap.beta is None and snap.alpha == 0.0


def test_adaptive_learners_need_a_pretrained_theta() -> None:
    for method in ("ap", "ft"):
        with pytest.raises(ValueError, match="init"):
            make_learner(method, CFG, seed=0)
    with pytest.raises(ValueError, match="beta_init"):
        make_learner("ap", CFG, seed=0, init=init_policy(CFG, seed=0), beta_init="zeros")


@pytest.mark.parametrize(("alpha", "source"), [(0.0, "theta"), (1.0, "beta")])
def test_mixture_acts_like_theta_at_alpha_0_and_like_beta_at_alpha_1(
    theta: MixedPolicy, alpha: float, source: str
) -> None:
    learner = make_learner("ap", CFG, seed=0, init=theta, beta_init="random",
                           alpha_schedule="constant", alpha_start=alpha)
    mixed = learner.snapshot()
    assert mixed.alpha == alpha
    single = MixedPolicy(mixed.theta if source == "theta" else mixed.beta)  # type: ignore[arg-type]
    hist = np.full((64, CFG.max_len), -1, dtype=np.int64)
    rng = np.random.default_rng(5)
    hist[:, -3:] = rng.integers(0, CFG.num_items, size=(64, 3))
    users = np.zeros(64, dtype=np.int64)
    for explore in (True, False):
        a_mix, _ = mixed.act_arrays(hist, users, explore=explore, rng=np.random.default_rng(9))
        a_one, _ = single.act_arrays(hist, users, explore=explore, rng=np.random.default_rng(9))
        np.testing.assert_array_equal(a_mix, a_one)
    other = MixedPolicy(mixed.beta if source == "theta" else mixed.theta)  # type: ignore[arg-type]
    a_other, _ = other.act_arrays(hist, users, explore=False, rng=np.random.default_rng(9))
    a_mix, _ = mixed.act_arrays(hist, users, explore=False, rng=np.random.default_rng(9))
    assert (a_other != a_mix).any()  # the two networks differ, so the check has teeth


def test_alpha_schedule_advances_with_updates(theta: MixedPolicy) -> None:
    learner = make_learner("ap", CFG, seed=0, init=theta, alpha_schedule="linear",
                           alpha_start=0.2, alpha_steps=4)
    assert isinstance(learner, APLearner)
    seen = [learner.snapshot().alpha]
    batch = _batch()
    for _ in range(5):
        metrics = learner.update(batch)
        seen.append(learner.snapshot().alpha)
        assert metrics["alpha"] == pytest.approx(seen[-2])
    assert seen == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    assert learner.snapshot().metadata["alpha_step"] == 5


@pytest.mark.parametrize("average", [False, True])
def test_ap_resumes_from_a_published_policy(theta: MixedPolicy, average: bool) -> None:
    """The service rebuilds its learner from the last published (ap) version: θ, β and α
    carry over and θ stays frozen. β resumes from the published weights: the latest ones,
    or with ``serve_average`` (the default) the Polyak average that was served."""
    learner = make_learner("ap", CFG, seed=0, init=theta, beta_init="random", lr=3e-3,
                           alpha_steps=10, serve_average=average)
    assert isinstance(learner, APLearner)
    for _ in range(4):
        learner.update(_batch())
    published = policy_from_bytes(policy_to_bytes(learner.snapshot()))
    resumed = make_learner("ap", CFG, seed=1, init=published, alpha_steps=10)
    assert isinstance(resumed, APLearner)
    assert resumed.alpha == pytest.approx(learner.alpha)
    served = learner.target if average else learner.net
    assert served is not None
    for a, b in zip(resumed.net.parameters(), served.parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(resumed.theta.parameters(), theta.theta.parameters(), strict=True):
        assert torch.equal(a, b)
    # Without the step in the metadata the α value itself is matched.
    published.metadata.pop("alpha_step")
    again = make_learner("ap", CFG, seed=1, init=published, alpha_steps=10)
    assert isinstance(again, APLearner)
    assert again.alpha == pytest.approx(learner.alpha)


def test_tiny_paper_suite_writes_the_tables(tmp_path: Path) -> None:
    """A --quick-sized suite shrunk to seconds on Coat: the three tables, the acceptance
    check, the curves and the exploration figure are written and regenerate results.md."""
    from simulator_client.experiments.suite import SuiteConfig, run_suite

    tiny_pretrain = {"epochs": 1, "horizon": 2, "users": 16, "warmup": 8, "num_parallel": 16}
    cfg = SuiteConfig(
        envs=("coat",), seeds=(0, 1), quick=True,
        methods=("random", "popular", "sasrec", "vw-bandit", "a2c", "ialp", "ialp-sampled",
                 "ialp-ft", "ialp-ap", "gee", "not-registered"),
        explore_methods=("a2c", "ialp-ap"),
        experiment={"steps": 48, "eval_every": 24, "eval_episodes": 3, "num_envs": 8,
                    "hidden": 8, "max_len": 8,
                    "online": {"warmup": 16, "batch_size": 8},
                    "hyper": {"ialp": {"pretrain": tiny_pretrain},
                              "ialp-ap": {"alpha_steps": 2}, "sasrec": {"epochs": 1}}},
        command="ialp experiment --suite paper (test)",
    )
    summary = run_suite(cfg, tmp_path / "out", progress=False, docs_dir=tmp_path / "docs")
    res = summary["results"]["coat"]
    assert set(res) == {"random", "popular", "sasrec", "vw-bandit", "a2c", "ialp",
                        "ialp-sampled", "ialp-ft", "ialp-ap", "gee"}  # unregistered: skipped
    for agg in res.values():
        assert agg["seeds"] == 2 and len(agg["curve"]) == 3  # steps 0, 24 and 48
        for point in ("at0", "at1", "final"):
            assert agg[point]["return"]["mean"] > 0
    # Every iALP method starts from the same πθ (sampled), the frozen ones never change,
    # and frozen iALP is evaluated greedily.
    starts = {res[m]["at0"]["return"]["mean"] for m in ("ialp-sampled", "ialp-ft", "ialp-ap")}
    assert len(starts) == 1
    for frozen in ("ialp", "ialp-sampled", "popular", "sasrec"):
        assert res[frozen]["final"]["return"]["mean"] == res[frozen]["at0"]["return"]["mean"]
    assert res["ialp"]["at0"]["return"]["mean"] != res["ialp-sampled"]["at0"]["return"]["mean"]
    checks = summary["checks"]["coat"]
    assert {"ap_over_popular", "ap_at_least_vw", "a2c_over_random", "r0_ratio"} <= set(checks)
    assert set(summary["explore"]["coat"]) == {f"{m}+{s}" for m in ("a2c", "ialp-ap")
                                               for s in ("greedy", "epsilon", "categorical")}
    assert "coat" in summary["checks"]
    # Every learner's updates, and the pre-training behind θ, are bounded and finite.
    stab = summary["stability"]["coat"]
    assert stab["non_finite"] == 0 and stab["holds"]
    assert stab["bound"] > 0 and 0 < stab["max_loss"] <= stab["bound"]
    assert stab["max_pretrain_loss"] > 0  # the pre-training's extremes reached the results
    out = tmp_path / "out"
    assert (out / "suite.json").exists()
    assert (out / "curves-coat.png").stat().st_size > 0
    assert (out / "explore-coat.png").stat().st_size > 0
    text = (tmp_path / "docs" / "results.md").read_text()
    for heading in ("Table 3", "Table 4", "Table 5", "Table 6", "Acceptance check",
                    "against the peers", "Stability"):
        assert heading in text
    # Table 6: the beyond-accuracy metrics of every evaluation, aggregated over the seeds.
    for key in ("diversity", "novelty", "coverage"):
        assert res["a2c"]["final"][key]["mean"] > 0 and res["a2c"]["final"][key]["n"] == 2
    assert "| coat diversity | coat novelty | coat coverage | coat HR@10 | coat NDCG@10 |" in text
    # ... and the final models' held-out next-item accuracy, where a method can rank.
    for name in ("sasrec", "popular", "random", "a2c", "ialp", "ialp-ap", "gee"):
        for key in ("hr@10", "ndcg@10"):
            assert 0.0 <= res[name]["ranking"][key]["mean"] <= 1.0
            assert res[name]["ranking"][key]["n"] == 2
    assert "ranking" not in res["vw-bandit"]  # no cheap score of every item: "–"
    # Coat's last rated item is the most liked: chance is 10 of the ~277 unrated items.
    assert res["sasrec"]["ranking"]["hr@10"]["mean"] > 2 * 10 / 277
    # GenEE's CTR per iteration: aggregated over seeds, plotted and tabled; only GenEE has it.
    ctr = res["gee"]["ctr_curve"]
    assert len(ctr) >= 2 and all(p["ctr"]["n"] == 2 for p in ctr)
    assert "ctr_curve" not in res["a2c"]
    assert "## GenEE: the pool's CTR per iteration" in text and "| coat | GenEE |" in text
    assert (tmp_path / "docs" / "img" / "results-curves-gee-coat.png").exists()
    assert "| SASRec next-item (supervised) |" in text and "| popular (training logs) |" in text
    assert "| A-iALP_ap |" in text
    assert (tmp_path / "docs" / "img" / "results-curves-coat.png").exists()
    # A second page (e.g. the imbalanced-logs suite) keeps its own files.
    from simulator_client.experiments.suite_report import write_results_md

    page = write_results_md(out / "suite.json", tmp_path / "docs", name="results-imbalanced")
    assert page.name == "results-imbalanced.md" and "results-imbalanced.json" in page.read_text()
    assert (tmp_path / "docs" / "results" / "results-imbalanced.json").exists()
    assert (tmp_path / "docs" / "img" / "results-imbalanced-curves-coat.png").exists()
    assert (tmp_path / "docs" / "results.md").read_text() == text  # untouched
    with pytest.raises(ValueError, match="plain file stem"):
        write_results_md(out / "suite.json", tmp_path / "docs", name="../elsewhere")
