"""Industry: Amazon 2018 Industrial & Scientific purchase sequences in the generic format.

Source files (``amazon_industrial_scientific/`` under the data directory): ``items.tsv``
(``item_idx, asin, title, category, brand``) and ``sequences.tsv`` (``user_idx, user_id,
item_idx_seq``, chronological, untruncated). Item ids keep the dataset's 0-based
``item_idx``; the item text is "title; category; brand" as in the paper.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simulator_client.datasets.errors import DatasetError
from simulator_client.datasets.sequences import SequenceDataset, make_dataset
from simulator_client.datasets.tsv import parse_item_indices, read_tsv

INDUSTRY_SOURCE = (
    "Amazon Review Data 2018 Industrial_and_Scientific, UniSRec 'Scientific' preprocessing. "
    "See shared/data/README.md, section 2."
)


def _read(rel: str, columns: tuple[str, ...]) -> tuple[Path, list[tuple[int, list[str]]]]:
    return read_tsv(rel, columns, source=INDUSTRY_SOURCE, quoting=' (csv quoting)')


def load_industry() -> SequenceDataset:
    """Read and validate the Industry files: 8,442 users over 4,385 items."""
    items_path, item_rows = _read(
        "amazon_industrial_scientific/items.tsv", ("item_idx", "asin", "title", "category", "brand")
    )
    ids: list[str] = []
    attrs: list[tuple[str, str, str]] = []
    for line, (idx, _asin, title, category, brand) in item_rows:
        if idx != str(len(ids)):
            raise DatasetError(
                f"item_idx {idx!r} out of order (expected {len(ids)})",
                path=items_path, line=line, source=INDUSTRY_SOURCE,
            )
        ids.append(idx)
        attrs.append((title, category, brand))
    seq_path, seq_rows = _read(
        "amazon_industrial_scientific/sequences.tsv", ("user_idx", "user_id", "item_idx_seq")
    )
    users: list[str] = []
    seqs: list[np.ndarray] = []
    for line, (user_idx, _reviewer, items) in seq_rows:
        if user_idx != str(len(users)):
            raise DatasetError(
                f"user_idx {user_idx!r} out of order (expected {len(users)})",
                path=seq_path, line=line, source=INDUSTRY_SOURCE,
            )
        seq = parse_item_indices(items, len(ids), path=seq_path, line=line, source=INDUSTRY_SOURCE)
        users.append(user_idx)
        seqs.append(seq)
    return make_dataset(
        "industry",
        item_ids=ids,
        item_columns=("title", "category", "brand"),
        item_attributes=attrs,
        user_ids=users,
        sequences=seqs,
    )
