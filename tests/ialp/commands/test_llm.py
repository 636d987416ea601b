"""Judge evaluation cases built from the real datasets, and the report command end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ialp.cli import main
from ialp.commands.llm import build_cases


def test_coat_cases_use_held_out_liked_items(shared_data_dir: Path) -> None:
    from simulator_client.datasets.coat import load_coat
    from simulator_client.envs.coat import make_coat_env

    data = load_coat()
    init = make_coat_env("test", data=data, progress=False).initial_history
    assert init is not None
    texts, cases = build_cases("coat", "test", 400, seed=3)
    assert len(texts) == data.num_items and len(cases) == 400
    # Every user appears once before anyone appears twice.
    assert len({c.user for c in cases[:200]}) == 200
    for c in cases:
        assert len(set(c.candidates)) == 10 and not set(c.candidates) & set(c.history)
        assert data.test[c.user, c.target] >= 4
        assert list(c.history) == [int(i) for i in init(c.user)]
    assert np.bincount([c.target_index for c in cases], minlength=10).min() > 10
    # Tuning cases hold out a liked training item instead: never a report target.
    _, train_cases = build_cases("coat", "train", 50, seed=3)
    for c in train_cases:
        assert data.train[c.user, c.target] >= 4 and c.target not in c.history


def test_sequential_cases_end_with_the_real_next_item(shared_data_dir: Path) -> None:
    from simulator_client.datasets.lfm import load_lfm

    ds = load_lfm()
    _, cases = build_cases("lfm", "test", 30, seed=0)
    for c in cases:
        seq = ds.sequences[c.user].tolist()
        assert list(c.history) == seq[:-1] and c.target == seq[-1]
    _, train_cases = build_cases("lfm", "train", 30, seed=0)
    test_users = {c.user for c in cases}
    for c in train_cases:
        seq = ds.sequences[c.user].tolist()
        t = len(c.history)
        assert c.user not in test_users and seq[:t] == list(c.history) and seq[t] == c.target
        assert t <= len(seq) - 3 or len(seq) <= 3


def test_report_command_writes_json(shared_data_dir: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    code = main(["llm", "report", "--env", "coat", "--cases", "60", "--seed", "1",
                 "--cache-path", str(tmp_path / "c.sqlite"), "--out", str(out), "--json"])
    assert code == 0
    doc = json.loads(out.read_text())
    printed = json.loads(capsys.readouterr().out)
    assert printed["hit_rate"] == doc["hit_rate"]
    assert doc["cases"] == 60 and doc["chance"] == pytest.approx(0.1)
    assert doc["hits"] + round(doc["none_rate"] * 60) <= 60
    assert sum(doc["chosen_label_counts"].values()) == 60 - round(doc["none_rate"] * 60)
    assert doc["unparseable_rate"] == 0.0 and "test.ascii" in doc["target"]


def test_compare_command_measures_every_judge_on_the_same_cases(
        shared_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, md = tmp_path / "cmp.json", tmp_path / "cmp.md"
    args = ["llm", "compare", "--env", "coat", "--judges", "random,popular", "--cases", "40",
            "--episodes", "6", "--seed", "2"]
    assert main([*args, "--out", str(out), "--markdown", str(md)]) == 0
    doc = json.loads(out.read_text())
    assert [r["judge"] for r in doc["results"]] == ["random", "popular"]
    for r in doc["results"]:
        assert r["hit@1"]["cases"] == 40 and 0.0 <= r["hit@1"]["hit_rate"] <= 1.0
        assert r["as_policy"]["episodes"] == 6
    lines = md.read_text().splitlines()
    assert lines[0].startswith("| judge | hit@1") and len(lines) == 4
    # Same seed, same numbers (timings aside).
    assert main([*args, "--out", str(tmp_path / "again.json")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    for a, b in zip(doc["results"], again["results"], strict=True):
        assert a["hit@1"]["hits"] == b["hit@1"]["hits"]
        assert a["as_policy"]["return"] == b["as_policy"]["return"]
    assert "popular" in capsys.readouterr().out
