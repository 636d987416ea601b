"""The generic sequential dataset format: parsing, round trip and strict validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simulator_client.datasets.errors import DatasetError
from simulator_client.datasets.sequences import load_sequence_dataset, write_sequence_dataset

ITEMS = "item_id\ttitle\tbrand\nA1\tRed pen\tAcme\nB2\tBlue pen\t\nC3\t\"Tab\tin title\"\tZed\n"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def items_file(tmp_path: Path) -> Path:
    return _write(tmp_path / "items.tsv", ITEMS)


def test_parses_sequences_items_and_ratings(tmp_path: Path, items_file: Path) -> None:
    seqs = _write(
        tmp_path / "seqs.tsv",
        "user_id\titem_ids\tratings\nalice\tA1 C3 B2\t5 4 1\n\nbob\tB2\t3.5\n",
    )
    ds = load_sequence_dataset(seqs, items_file, name="shop")
    assert ds.num_users == 2 and ds.num_items == 3 and ds.num_interactions == 4
    assert ds.user_ids == ("alice", "bob")
    assert ds.sequences[0].tolist() == [0, 2, 1]
    assert ds.ratings is not None and ds.ratings[1].tolist() == [3.5]
    assert ds.item_columns == ("title", "brand")
    # Empty attributes are skipped; a quoted field may hold the delimiter.
    assert ds.item_text == ("Red pen; Acme", "Blue pen", "Tab\tin title; Zed")
    assert ds.item_popularity().tolist() == [1, 2, 1]
    assert ds.item_popularity([1]).tolist() == [0, 1, 0]


def test_round_trip_keeps_content_and_fingerprint(tmp_path: Path, items_file: Path) -> None:
    seqs = _write(tmp_path / "s.tsv", "item_ids\tuser_id\nA1 B2\tu1\nC3 C3 A1\tu2\n")
    ds = load_sequence_dataset(seqs, items_file)
    seq_out, items_out = write_sequence_dataset(ds, tmp_path / "out")
    again = load_sequence_dataset(seq_out, items_out)
    assert again.fingerprint == ds.fingerprint
    assert [s.tolist() for s in again.sequences] == [[0, 1], [2, 2, 0]]
    # The fingerprint follows the content.
    other = _write(tmp_path / "s2.tsv", "user_id\titem_ids\nu1\tA1 B2\nu2\tC3 A1\n")
    assert load_sequence_dataset(other, items_file).fingerprint != ds.fingerprint


def test_csv_files_are_comma_separated(tmp_path: Path) -> None:
    items = _write(tmp_path / "items.csv", 'item_id,name\n1,"Doe, John"\n2,Bach\n')
    seqs = _write(tmp_path / "seqs.csv", "user_id,item_ids\nx,1 2 1\n")
    ds = load_sequence_dataset(seqs, items)
    assert ds.item_text == ("Doe, John", "Bach")
    assert ds.sequences[0].tolist() == [0, 1, 0]


def _error(seqs: Path, items: Path) -> DatasetError:
    with pytest.raises(DatasetError) as info:
        load_sequence_dataset(seqs, items)
    return info.value


@pytest.mark.parametrize(
    ("header", "needle"),
    [
        ("user\titem_ids", "missing column(s) 'user_id'"),
        ("user_id\titems", "missing column(s) 'item_ids'"),
        ("user_id\titem_ids\ttimestamp", "unknown column(s) 'timestamp'"),
    ],
)
def test_wrong_sequence_columns_name_file_and_line(
    tmp_path: Path, items_file: Path, header: str, needle: str
) -> None:
    seqs = _write(tmp_path / "bad.tsv", f"{header}\nu\tA1\n")
    err = _error(seqs, items_file)
    assert needle in str(err)
    assert f"{seqs}:1" in str(err)
    assert err.path == seqs and err.line == 1


def test_unknown_item_id_names_file_line_and_id(tmp_path: Path, items_file: Path) -> None:
    seqs = _write(tmp_path / "seqs.tsv", "user_id\titem_ids\nu1\tA1 B2\nu2\tA1 ZZ9 C3\n")
    err = _error(seqs, items_file)
    assert f"{seqs}:3" in str(err)
    assert "unknown item id 'ZZ9'" in str(err) and "'u2'" in str(err)


def test_empty_sequence_names_file_and_line(tmp_path: Path, items_file: Path) -> None:
    seqs = _write(tmp_path / "seqs.tsv", "user_id\titem_ids\nu1\tA1\nu2\t  \nu3\tB2\n")
    err = _error(seqs, items_file)
    assert f"{seqs}:3" in str(err) and "empty sequence" in str(err)


@pytest.mark.parametrize(
    ("body", "line", "needle"),
    [
        ("u1\tA1\nu1\tB2\n", 3, "duplicate user_id 'u1' (first on line 2)"),
        ("u1\tA1 B2\n", 2, "row has 2 fields, the header has 3"),
    ],
)
def test_other_sequence_errors(
    tmp_path: Path, items_file: Path, body: str, line: int, needle: str
) -> None:
    header = "user_id\titem_ids" + ("\tratings" if "fields" in needle else "")
    seqs = _write(tmp_path / "seqs.tsv", f"{header}\n{body}")
    err = _error(seqs, items_file)
    assert needle in str(err) and f"{seqs}:{line}" in str(err)


def test_ratings_must_match_items(tmp_path: Path, items_file: Path) -> None:
    seqs = _write(tmp_path / "seqs.tsv", "user_id\titem_ids\tratings\nu1\tA1 B2\t5\n")
    err = _error(seqs, items_file)
    assert "1 ratings for 2 items" in str(err) and f"{seqs}:2" in str(err)
    bad = _write(tmp_path / "nan.tsv", "user_id\titem_ids\tratings\nu1\tA1\tgood\n")
    assert "non-numeric rating" in str(_error(bad, items_file))


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("title\tbrand\nx\ty\n", 1, "missing column 'item_id'"),
        ("item_id\nA\n", 1, "no text attribute columns"),
        ("item_id\ttitle\nA\tx\nA\ty\n", 3, "duplicate item_id 'A' (first on line 2)"),
        ("item_id\ttitle\nA\tx\textra\n", 2, "row has 3 fields, the header has 2"),
    ],
)
def test_items_file_errors(tmp_path: Path, text: str, line: int, needle: str) -> None:
    items = _write(tmp_path / "items.tsv", text)
    seqs = _write(tmp_path / "seqs.tsv", "user_id\titem_ids\nu\tA\n")
    err = _error(seqs, items)
    assert needle in str(err) and f"{items}:{line}" in str(err)


def test_missing_and_empty_files(tmp_path: Path, items_file: Path) -> None:
    err = _error(tmp_path / "nope.tsv", items_file)
    assert "file not found" in str(err) and "nope.tsv" in str(err)
    empty = _write(tmp_path / "empty.tsv", "")
    assert "file is empty" in str(_error(empty, items_file))
    header_only = _write(tmp_path / "h.tsv", "user_id\titem_ids\n")
    assert "no sequences" in str(_error(header_only, items_file))


def test_shared_lfm_and_industry_match_the_data_readme(
    shared_data_dir: Path, tmp_path: Path
) -> None:
    from simulator_client.datasets.industry import load_industry
    from simulator_client.datasets.lfm import load_lfm

    lfm = load_lfm()
    assert (lfm.num_users, lfm.num_items, lfm.num_interactions) == (1220, 4606, 52925)
    assert int((lfm.item_popularity() > 0).sum()) == 4606
    ind = load_industry()
    assert (ind.num_users, ind.num_items, ind.num_interactions) == (8442, 4385, 59427)
    assert ind.length_stats()["min"] == 5 and ind.length_stats()["max"] == 80
    assert ind.item_columns == ("title", "category", "brand")
    # Both convert losslessly through the generic format (the path `ialp env build` uses).
    for ds in (lfm, ind):
        again = load_sequence_dataset(*write_sequence_dataset(ds, tmp_path / ds.name), name=ds.name)
        assert again.fingerprint == ds.fingerprint
        assert again.item_text == ds.item_text
        assert np.concatenate(again.sequences).max() < ds.num_items
