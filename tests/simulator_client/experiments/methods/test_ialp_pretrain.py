"""θ pre-trained inside an experiment: the configured judge is the one used, and each
judge's θ has its own cache folder."""

from __future__ import annotations

import json

import pytest

from simulator_client.envs.coat import make_coat_env
from simulator_client.experiments import ExperimentConfig, policy_config_for
from simulator_client.experiments.methods.ialp import pretrain_judge, pretrain_theta

SMALL = {"epochs": 1, "horizon": 2, "users": 8, "warmup": 8, "updates_per_step": 1,
         "num_parallel": 8}


def test_pretraining_uses_the_named_judge_and_caches_per_judge() -> None:
    env = make_coat_env("train", progress=False)
    cfg = policy_config_for(env, ExperimentConfig(hidden=16, blocks=1, max_len=10))
    ckpt = pretrain_theta(env, "coat", cfg, 0, {**SMALL, "judge": "cooc"}, progress=False)
    log = json.loads((ckpt.parent / "pretrain.json").read_text(encoding="utf-8"))
    assert log["summary"]["judge"] == "cooc"
    assert log["summary"]["transitions"] == 8 * 2
    stamp = (ckpt.parent / "pretrain.json").stat().st_mtime_ns
    # The same settings find the cached θ; the default judge (embedding on Coat) is
    # another θ in another folder.
    assert pretrain_theta(env, "coat", cfg, 0, {**SMALL, "judge": "cooc"},
                          progress=False) == ckpt
    assert (ckpt.parent / "pretrain.json").stat().st_mtime_ns == stamp
    from simulator_client.experiments.methods.ialp import theta_cache_path

    assert theta_cache_path("coat", 0, cfg, SMALL) != ckpt.parent
    assert theta_cache_path("coat", 0, cfg, {**SMALL, "judge": "embedding"}) == \
        theta_cache_path("coat", 0, cfg, SMALL)
    with pytest.raises(ValueError, match="unknown judge backend 'bogus'"):
        pretrain_judge("bogus", env, "coat")
