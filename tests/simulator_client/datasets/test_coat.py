"""The Coat loader on real files, and its errors on missing or malformed ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from simulator_client.datasets.coat import load_coat
from simulator_client.datasets.errors import DatasetError


def test_real_coat_counts(shared_data_dir: Path) -> None:
    data = load_coat()
    assert (data.num_users, data.num_items) == (290, 300)
    assert int((data.train > 0).sum()) == 6960
    assert int((data.test > 0).sum()) == 4640
    assert np.bincount(data.train[data.train > 0], minlength=6)[1:].tolist() == [
        1901, 1437, 1717, 1275, 630
    ]
    assert data.pseudo_gt.min() == 1 and data.pseudo_gt.max() == 5
    assert data.item_text[0] == "men's bomber jacket"
    assert data.item_text[1] == "men's blue insulated jacket"
    assert len(data.fingerprint) == 64


@pytest.fixture()
def coat_copy(shared_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    dest = tmp_path / "coat"
    shutil.copytree(shared_data_dir / "coat", dest)
    for f in dest.rglob("*"):
        f.chmod(0o644)
    monkeypatch.setenv("IALP_DATA_DIR", str(tmp_path))
    return dest


def test_missing_file_names_it_and_the_source(coat_copy: Path) -> None:
    (coat_copy / "rl4rec_coat_pseudoGT_ratingM.ascii").unlink()
    with pytest.raises(DatasetError) as err:
        load_coat()
    text = str(err.value)
    assert "rl4rec_coat_pseudoGT_ratingM.ascii" in text
    assert "file not found" in text
    assert "expected format" in text and "Schnabel" in text


def test_ragged_matrix_names_file_and_line(coat_copy: Path) -> None:
    path = coat_copy / "train.ascii"
    lines = path.read_text().splitlines()
    lines[4] = " ".join(lines[4].split()[:-1])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"train\.ascii:5: row has 299 columns"):
        load_coat()


def test_non_numeric_and_out_of_range(coat_copy: Path) -> None:
    path = coat_copy / "test.ascii"
    lines = path.read_text().splitlines()
    lines[0] = "x " + " ".join(lines[0].split()[1:])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"test\.ascii:1: non-numeric"):
        load_coat()
    lines[0] = "9 " + " ".join(lines[0].split()[1:])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"test\.ascii:1: value 9 outside \[0, 5\]"):
        load_coat()


def test_wrong_shape_and_bad_header(coat_copy: Path) -> None:
    gt = coat_copy / "rl4rec_coat_pseudoGT_ratingM.ascii"
    gt.write_text("\n".join(gt.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(DatasetError, match=r"shape \(289, 300\), expected \(290, 300\)"):
        load_coat()


def test_bad_items_header(coat_copy: Path) -> None:
    items = coat_copy / "items.tsv"
    lines = items.read_text().splitlines()
    lines[0] = "item\tgender\tkind\tcolor\tonfrontpage"
    items.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"items\.tsv:1: header"):
        load_coat()


def test_short_items_row(coat_copy: Path) -> None:
    items = coat_copy / "items.tsv"
    lines = items.read_text().splitlines()
    lines[3] = "\t".join(lines[3].split("\t")[:3])
    items.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"items\.tsv:4: row has 3 fields"):
        load_coat()


def test_no_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IALP_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match="nowhere"):
        load_coat()
