"""The stability record: largest logged |loss| and |Q| per run, checked against the
environment's reachable Return."""

from __future__ import annotations

import json
import math
from pathlib import Path

from simulator_client.envs.coat import make_coat_env
from simulator_client.experiments.suite_report import STABILITY_FACTOR, _stability
from trainer.learners.extremes import MetricExtremes


def test_extremes_keep_the_largest_magnitude_and_count_non_finite_values() -> None:
    ext = MetricExtremes()
    ext.add({"loss": 2.0, "q_mean": -7.5, "entropy": 1.0, "note": "text", "flag": True})
    ext.add({"loss": -3.0, "q_mean": 1.0, "critic_loss": math.nan})
    ext.add({"q_abs_max": math.inf})
    doc = ext.as_dict()
    assert doc["max_abs"] == {"entropy": 1.0, "loss": 3.0, "q_mean": 7.5}
    assert doc["non_finite"] == 2
    assert doc["non_finite_by_key"] == {"critic_loss": 1, "q_abs_max": 1}
    assert doc["max_loss"] == 3.0 and doc["max_value"] == 7.5 and doc["updates"] == 3


def _run(path: Path, max_return: float, train: dict, pretrain: dict | None = None) -> Path:
    ext = MetricExtremes()
    ext.add(train)
    methods = {"a2c": {"train": {"extremes": ext.as_dict()}, "pretrain": None}}
    if pretrain is not None:
        pre = MetricExtremes()
        pre.add(pretrain)
        methods["ialp-ap"] = {"train": {"extremes": MetricExtremes().as_dict()},
                              "pretrain": {"extremes": pre.as_dict()}}
    path.write_text(json.dumps({"max_return": max_return, "methods": methods}))
    return path


def test_stability_check_fails_on_a_value_beyond_the_bound_or_a_non_finite_one(
        tmp_path: Path) -> None:
    ok = _run(tmp_path / "ok.json", 100.0, {"loss": 5.0, "q_mean": 40.0}, {"loss": 0.5})
    st = _stability([ok])
    assert st["holds"] and st["bound"] == STABILITY_FACTOR * 100.0
    assert st["max_value"] == 40.0 and st["max_value_method"] == "a2c"
    assert st["max_pretrain_loss"] == 0.5
    # A pre-training Q beyond 10 × the reachable Return fails the whole environment.
    big = _run(tmp_path / "big.json", 100.0, {"loss": 5.0}, {"q_mean": 1e4})
    st = _stability([ok, big])
    assert not st["holds"] and st["max_pretrain_value"] == 1e4
    bad = _run(tmp_path / "bad.json", 100.0, {"loss": math.nan})
    st = _stability([ok, bad])
    assert not st["holds"] and st["non_finite"] == 1


def test_coat_reachable_return_is_the_cap_times_the_best_rating() -> None:
    env = make_coat_env("test", progress=False)
    assert env.max_return() == env.max_steps * 5.0  # the dense matrix's best rating is 5
