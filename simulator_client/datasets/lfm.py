"""LFM: the artist-level Last.fm sequences (LLaRA "lastfm") in the generic format.

Source files (``lastfm_llara/`` under the data directory): ``items.tsv``
(``item_idx, artist_name``) and ``sequences.tsv`` (``seq_id, split, is_complete,
item_idx_seq``). Every row of ``sequences.tsv`` becomes one user of the generic format
(``user_id`` = ``seq_id``): 976 full training sequences and 244 held-out rows (``valid`` /
``test``) that hold only the user's last ≤ 10 items plus the target. Item ids keep the
dataset's 0-based ``item_idx``, so internal indices equal the shared data's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simulator_client.datasets.errors import DatasetError
from simulator_client.datasets.sequences import SequenceDataset, make_dataset
from simulator_client.datasets.tsv import parse_item_indices, read_tsv

LFM_SOURCE = (
    "LLaRA 'lastfm' (HetRec 2011 Last.fm artists), an artist-level stand-in for LFM-1b. "
    "See shared/data/README.md, section 3a."
)
LFM_SPLITS = ("train", "valid", "test")


def _read(rel: str, columns: tuple[str, ...]) -> tuple[Path, list[tuple[int, list[str]]]]:
    return read_tsv(rel, columns, source=LFM_SOURCE)


def load_lfm() -> SequenceDataset:
    """Read and validate the LFM files; one user per sequence row (1,220)."""
    items_path, item_rows = _read("lastfm_llara/items.tsv", ("item_idx", "artist_name"))
    ids: list[str] = []
    names: list[tuple[str]] = []
    for line, (idx, name) in item_rows:
        if idx != str(len(ids)):
            raise DatasetError(
                f"item_idx {idx!r} out of order (expected {len(ids)})",
                path=items_path, line=line, source=LFM_SOURCE,
            )
        ids.append(idx)
        names.append((name,))
    seq_path, seq_rows = _read(
        "lastfm_llara/sequences.tsv", ("seq_id", "split", "is_complete", "item_idx_seq")
    )
    users: list[str] = []
    seqs: list[np.ndarray] = []
    for line, (seq_id, split, _complete, items) in seq_rows:
        if split not in LFM_SPLITS:
            raise DatasetError(
                f"split {split!r} not one of {LFM_SPLITS}", path=seq_path, line=line,
                source=LFM_SOURCE,
            )
        seq = parse_item_indices(items, len(ids), path=seq_path, line=line, source=LFM_SOURCE)
        users.append(seq_id)
        seqs.append(seq)
    return make_dataset(
        "lfm",
        item_ids=ids,
        item_columns=("artist",),
        item_attributes=names,
        user_ids=users,
        sequences=seqs,
    )
