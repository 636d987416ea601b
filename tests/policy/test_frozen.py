"""Serving graphs (``MixedPolicy.freeze_for_serving``): the frozen scorer and the
one-graph k = 1 sampler decide exactly what the eager policy decides."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policy.checkpoint import init_policy
from policy.config import PolicyConfig
from policy.exploration import ExplorationConfig
from policy.mixed import BF16_MIN_ITEMS, FastInputs, MixedPolicy, serving_precision


def _policy(n: int, *, features: int = 0, users: int = 0, seed: int = 0) -> MixedPolicy:
    cfg = PolicyConfig(num_items=n, max_len=12, item_features=features, num_users=users)
    policy = init_policy(cfg, seed=seed)
    if features:
        with torch.no_grad():  # a feature table that is not all zeros
            policy.theta.encoder._items[0].features.normal_(generator=torch.Generator()
                                                            .manual_seed(seed))
    return policy


def _batch(n: int, rng: np.random.Generator, b: int = 12) -> list[list[int]]:
    # Lengths from 0 (empty) past max_len (truncated): every token-trimming case.
    return [[int(x) for x in rng.choice(n, int(rng.integers(0, min(n - 1, 20))),
                                        replace=False)] for _ in range(b)]


@pytest.mark.parametrize(("n", "features", "users"), [(30, 0, 0), (30, 4, 0), (200, 0, 7)])
def test_frozen_probabilities_equal_the_eager_network(n: int, features: int,
                                                      users: int) -> None:
    policy = _policy(n, features=features, users=users)
    rng = np.random.default_rng(0)
    for _ in range(3):  # several batch sizes and history lengths through one graph
        hist = _batch(n, rng, b=int(rng.integers(1, 9)))
        padded = np.stack([np.pad(np.asarray(h[-12:], dtype=np.int64), (12 - len(h[-12:]), 0),
                                  constant_values=-1) for h in hist])
        ids = rng.integers(0, users + 3, size=len(hist)) if users else None
        eager, _ = policy.component_probs(padded, ids)
        policy.freeze_for_serving()
        frozen, _ = policy.component_probs(padded, ids)
        policy._frozen.clear()
        policy._sampler = None
        policy._serving = False
        np.testing.assert_allclose(frozen, eager, rtol=1e-5, atol=1e-9)


# 17,408 and 20,000 items: the sampler's two-level passes (above _DIRECT_MAX) over
# blocks of 1,024, without and with a shorter last block.
# bfloat16: both frozen graphs round the same product, so they still agree draw for draw.
@pytest.mark.parametrize(("n", "mask", "precision"), [
    (25, True, "float32"), (300, False, "float32"), (300, True, "float32"),
    (17408, False, "float32"), (20000, True, "float32"), (300, True, "bfloat16"),
    (20000, False, "bfloat16")])
def test_the_one_graph_sampler_draws_what_the_general_path_draws(n: int, mask: bool,
                                                                 precision: str) -> None:
    policy = _policy(n)
    policy.exploration = ExplorationConfig(mask_history=mask)
    policy.freeze_for_serving(precision)
    assert policy.precision == precision
    rng = np.random.default_rng(3)
    hist = _batch(n, rng, b=16)
    exclude = [[int(rng.integers(n)), int(rng.integers(n))] if i % 3 == 0 else []
               for i in range(16)]
    explore = [i % 4 != 0 for i in range(16)]
    plan = policy.plan(hist, k=[1] * 16, explore=explore, exclude=exclude,
                       user_ids=list(range(16)))
    fast = policy.fast_inputs(plan, rng)
    assert fast is not None
    # The general path draws one uniform per exploring row, in row order: give the
    # sampler the same ones.
    u = np.zeros(16)
    u[[i for i in range(16) if explore[i]]] = np.random.default_rng(9).random(sum(explore))
    items, props, ok = policy.sample_frozen(plan, FastInputs(fast.banned, u, fast.greedy))
    p_theta, p_beta = policy.component_probs(plan.padded, plan.users)
    slates = policy.draw(plan, p_theta, p_beta, rng=np.random.default_rng(9))
    assert ok
    assert items.tolist() == [s.items[0] for s in slates]
    np.testing.assert_allclose(props, [s.propensities[0] for s in slates], rtol=1e-5)
    for row, item in enumerate(items):
        assert item not in exclude[row]
        if mask:
            assert item not in hist[row]


def test_the_sampler_is_only_used_where_it_decides_alone() -> None:
    rng = np.random.default_rng(0)
    policy = _policy(30)
    plan = policy.plan([[1, 2]], k=[1])
    assert policy.fast_inputs(plan, rng) is None  # not frozen
    policy.freeze_for_serving()
    assert policy.fast_inputs(plan, rng) is not None
    assert policy.fast_inputs(policy.plan([[1, 2]], k=[2]), rng) is None  # k > 1
    eps = policy.plan([[1]], k=[1], exploration=ExplorationConfig(strategy="epsilon",
                                                                   epsilon=0.1))
    assert policy.fast_inputs(eps, rng) is None
    cfg = PolicyConfig(num_items=30, max_len=12)
    mixed = MixedPolicy(init_policy(cfg, seed=0).theta, init_policy(cfg, seed=1).theta,
                        alpha=0.5, scheme="ap")
    mixed.freeze_for_serving()
    assert mixed.fast_inputs(mixed.plan([[1]], k=[1]), rng) is None  # β mixes in


def test_auto_precision_is_bfloat16_only_for_large_catalogues_on_native_hardware() -> None:
    assert serving_precision("auto", BF16_MIN_ITEMS - 1) == "float32"
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert serving_precision("auto", BF16_MIN_ITEMS) == ("bfloat16" if native else "float32")
    assert serving_precision("float32", 10**6) == "float32"
    assert serving_precision("bfloat16", 10) == "bfloat16"
    with pytest.raises(ValueError, match="unknown precision 'float16'"):
        serving_precision("float16", 10)


def test_bfloat16_scores_stay_close_to_float32() -> None:
    """The rounded product moves each probability by a few per cent at most (1.9 % here)
    and the distribution by well under 1 % in total variation (0.2 % here), on a
    sharpened actor whose logits spread over several units, as after training."""
    n = 5000
    policy = _policy(n, seed=2)
    with torch.no_grad():  # sharpen: actor weights × 16 spread the logits over ~10 units
        for param in policy.theta.actor.parameters():
            param.mul_(16.0)
    hist = _batch(n, np.random.default_rng(4), b=8)
    padded = np.stack([np.pad(np.asarray(h[-12:], dtype=np.int64), (12 - len(h[-12:]), 0),
                              constant_values=-1) for h in hist])
    policy.freeze_for_serving("float32")
    exact, _ = policy.component_probs(padded)
    rounded_policy = MixedPolicy(policy.theta)
    rounded_policy.freeze_for_serving("bfloat16")
    rounded, _ = rounded_policy.component_probs(padded)
    logit_spread = np.log(exact.max(axis=1) / exact.min(axis=1))
    assert logit_spread.min() > 5.0  # the test is not about near-uniform distributions
    assert not np.array_equal(rounded, exact)  # bfloat16 really ran
    tv = 0.5 * np.abs(rounded - exact).sum(axis=1)
    assert tv.max() < 0.01
    np.testing.assert_allclose(rounded, exact, rtol=0.05)
    # Freezing again at another precision re-traces: the graphs follow the new one.
    policy.freeze_for_serving("bfloat16")
    np.testing.assert_array_equal(policy.component_probs(padded)[0], rounded)
