"""Strict reading of the tab-separated files shipped with the datasets."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from simulator_client.datasets.errors import DatasetError
from simulator_client.datasets.paths import dataset_file


def read_tsv(
    rel: str, columns: tuple[str, ...], *, source: str, quoting: str = ""
) -> tuple[Path, list[tuple[int, list[str]]]]:
    """Rows of ``rel`` (under the data directory) as ``(line number, fields)``.

    The header must be exactly ``columns`` and every non-empty row must have that many
    fields; otherwise a :class:`DatasetError` names the file, the line, the expected
    format and where the dataset comes from.
    """
    expected = f"tab-separated{quoting} with header " + "\t".join(columns)
    path = dataset_file(rel, expected=expected, source=source)
    out: list[tuple[int, list[str]]] = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter="\t")
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != columns:
            raise DatasetError(
                f"header is {header!r}", path=path, line=1, expected=expected, source=source
            )
        for row in reader:
            if not row:
                continue
            if len(row) != len(columns):
                raise DatasetError(
                    f"row has {len(row)} fields, expected {len(columns)}",
                    path=path, line=reader.line_num, expected=expected, source=source,
                )
            out.append((reader.line_num, row))
    return path, out


def parse_item_indices(
    text: str, num_items: int, *, path: Path, line: int, source: str
) -> np.ndarray:
    """A non-empty, space-separated list of 0-based item indices below ``num_items``."""
    try:
        seq = np.asarray([int(t) for t in text.split()], dtype=np.int64)
    except ValueError as exc:
        raise DatasetError(
            f"non-integer item index ({exc})", path=path, line=line, source=source
        ) from None
    if len(seq) == 0:
        raise DatasetError("empty sequence", path=path, line=line, source=source)
    if seq.min() < 0 or seq.max() >= num_items:
        raise DatasetError(
            f"item index outside [0, {num_items})", path=path, line=line, source=source
        )
    return seq
