"""Cached artefact folders: keys follow the inputs, writes land whole or not at all."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from policy.item_features import ItemFeatures
from simulator_client.experiments.cached import cache_folder, write_atomically


def test_the_key_digests_the_inputs_and_the_item_features(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IALP_CACHE_DIR", str(tmp_path))
    ident = {"env": "coat", "seed": 0}
    plain = cache_folder("ialp-theta", "coat", ident)
    # The key that earlier runs cached under (the same digest, so caches stay valid).
    key = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    assert plain.name == f"coat-{key}" and plain.parent.name == "ialp-theta"
    assert cache_folder("ialp-theta", "coat", {"env": "coat", "seed": 1}) != plain
    feats = ItemFeatures(matrix=np.ones((3, 2), dtype=np.float32),
                         prior=np.zeros(3, dtype=np.float32), names=("a", "b"))
    with_items = cache_folder("ialp-theta", "coat", ident, feats)
    assert with_items != plain
    feats.matrix[0, 0] = 2.0
    assert cache_folder("ialp-theta", "coat", ident, feats) != with_items


def test_a_write_replaces_a_stale_partial_folder_and_leaves_no_temporary(
        tmp_path: Path) -> None:
    out = tmp_path / "artefact"
    (out / "policy").mkdir(parents=True)  # an interrupted earlier run: no report
    write_atomically(out, lambda f: (f.mkdir(), (f / "report.json").write_text("{}")))
    assert sorted(p.name for p in out.iterdir()) == ["report.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["artefact"]


def test_a_failed_write_leaves_nothing_at_the_destination(tmp_path: Path) -> None:
    out = tmp_path / "artefact"

    def fail(folder: Path) -> None:
        folder.mkdir()
        (folder / "half").write_text("x")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_atomically(out, fail)
    assert not out.exists()
