"""The generic sequential dataset format: bring your own users, items and order.

Two delimited text files with a header row (tab-separated; a ``.csv`` name means
comma-separated). Quoting follows the ``csv`` module (a field may be wrapped in double
quotes, e.g. a title containing a tab).

**Items file** — one row per catalogue item:

* ``item_id`` (required): any non-empty string, unique. Row order gives the internal
  0-based item index.
* one or more further columns (any names): text attributes, e.g. ``title``, ``category``,
  ``brand``. The item's text is the non-empty attributes joined with ``"; "``.

**Sequences file** — one row per user:

* ``user_id`` (required): any non-empty string, unique.
* ``item_ids`` (required): the user's items, oldest first, separated by spaces; every id
  must appear in the items file's ``item_id`` column; at least one item.
* ``ratings`` (optional): one number per item of ``item_ids``, separated by spaces.

Any other column in the sequences file, a missing required column, an unknown item id, an
empty sequence, a duplicate id or a ratings list of the wrong length is rejected with a
:class:`DatasetError` naming the file and the line. See docs/environments-sequential.md.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simulator_client.datasets.errors import DatasetError

SEQUENCE_COLUMNS = ("user_id", "item_ids")
"""Required columns of the sequences file."""
OPTIONAL_SEQUENCE_COLUMNS = ("ratings",)
"""Optional columns of the sequences file."""
ITEM_ID_COLUMN = "item_id"
"""Required first-class column of the items file."""

SEQUENCES_EXPECTED = (
    "header 'user_id<TAB>item_ids' (optionally '<TAB>ratings'); item_ids = space-separated "
    "item ids, oldest first; ratings = one number per item"
)
ITEMS_EXPECTED = "header 'item_id<TAB>attribute...' with at least one text attribute column"
FORMAT_DOC = "docs/environments-sequential.md (bring-your-own dataset format)"


@dataclass(frozen=True)
class SequenceDataset:
    """Users' ordered item sequences over a catalogue of items with text attributes."""

    name: str
    """Dataset name (the environment name it builds)."""
    item_ids: tuple[str, ...]
    """External item id per internal index."""
    item_columns: tuple[str, ...]
    """Names of the text attribute columns of the items file."""
    item_attributes: tuple[tuple[str, ...], ...]
    """Per item, its attribute values in ``item_columns`` order."""
    user_ids: tuple[str, ...]
    """External user id per internal user index."""
    sequences: tuple[np.ndarray, ...]
    """Per user, int64 internal item indices, oldest first (never empty)."""
    ratings: tuple[np.ndarray, ...] | None
    """Per user, float32 ratings aligned with ``sequences``; ``None`` without ratings."""
    fingerprint: str
    """SHA-256 over the content: the cache key of anything derived from it."""

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def num_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    @property
    def item_text(self) -> tuple[str, ...]:
        """Readable text per item: non-empty attributes joined with ``"; "``."""
        return tuple(
            "; ".join(v.strip() for v in attrs if v.strip()) for attrs in self.item_attributes
        )

    def item_popularity(self, users: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """[I] int64 interaction counts over ``users`` (default: everyone)."""
        idx = range(self.num_users) if users is None else [int(u) for u in users]
        counts = np.zeros(self.num_items, dtype=np.int64)
        for u in idx:
            np.add.at(counts, self.sequences[u], 1)
        return counts

    def length_stats(self) -> dict[str, float]:
        """Minimum, mean and maximum sequence length."""
        lens = np.asarray([len(s) for s in self.sequences], dtype=np.float64)
        return {"min": float(lens.min()), "mean": float(lens.mean()), "max": float(lens.max())}


def _delimiter(path: Path) -> str:
    return "," if path.suffix.lower() == ".csv" else "\t"


def _rows(path: Path, expected: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank data row; the header is read separately."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter=_delimiter(path))
        try:
            for row in reader:
                if not row or all(not f.strip() for f in row):
                    continue
                yield reader.line_num, row
        except csv.Error as exc:
            raise DatasetError(
                f"unreadable row ({exc})", path=path, line=reader.line_num, expected=expected
            ) from None
        except UnicodeDecodeError as exc:
            raise DatasetError(f"not UTF-8 text ({exc.reason})", path=path) from None


def _open_checked(path: Path | str, expected: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DatasetError("file not found", path=path, expected=expected, source=FORMAT_DOC)
    return path


def read_items(path: Path | str) -> tuple[tuple[str, ...], tuple[str, ...], list[tuple[str, ...]]]:
    """Parse an items file: ``(item_ids, attribute columns, attribute values per item)``."""
    path = _open_checked(path, ITEMS_EXPECTED)
    rows = _rows(path, ITEMS_EXPECTED)
    first = next(rows, None)
    if first is None:
        raise DatasetError("file is empty", path=path, expected=ITEMS_EXPECTED, source=FORMAT_DOC)
    line, header = first
    header = [h.strip() for h in header]
    if ITEM_ID_COLUMN not in header:
        raise DatasetError(
            f"missing column {ITEM_ID_COLUMN!r} (header is {header!r})",
            path=path, line=line, expected=ITEMS_EXPECTED, source=FORMAT_DOC,
        )
    if len(header) < 2:
        raise DatasetError(
            "no text attribute columns besides 'item_id'",
            path=path, line=line, expected=ITEMS_EXPECTED, source=FORMAT_DOC,
        )
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup or any(not h for h in header):
        what = f"duplicate column {dup[0]!r}" if dup else "empty column name"
        raise DatasetError(what, path=path, line=line, expected=ITEMS_EXPECTED, source=FORMAT_DOC)
    id_col = header.index(ITEM_ID_COLUMN)
    attr_cols = [i for i in range(len(header)) if i != id_col]
    ids: list[str] = []
    attrs: list[tuple[str, ...]] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        if len(row) != len(header):
            raise DatasetError(
                f"row has {len(row)} fields, the header has {len(header)}",
                path=path, line=line, expected=ITEMS_EXPECTED, source=FORMAT_DOC,
            )
        item = row[id_col].strip()
        if not item:
            raise DatasetError("empty item_id", path=path, line=line, source=FORMAT_DOC)
        if item in seen:
            raise DatasetError(
                f"duplicate item_id {item!r} (first on line {seen[item]})",
                path=path, line=line, source=FORMAT_DOC,
            )
        seen[item] = line
        ids.append(item)
        attrs.append(tuple(row[i] for i in attr_cols))
    if not ids:
        raise DatasetError("no items after the header", path=path, source=FORMAT_DOC)
    return tuple(ids), tuple(header[i] for i in attr_cols), attrs


def read_sequences(
    path: Path | str, item_index: dict[str, int]
) -> tuple[tuple[str, ...], list[np.ndarray], list[np.ndarray] | None]:
    """Parse a sequences file against ``item_index`` (external id → internal index)."""
    path = _open_checked(path, SEQUENCES_EXPECTED)
    rows = _rows(path, SEQUENCES_EXPECTED)
    first = next(rows, None)
    if first is None:
        raise DatasetError(
            "file is empty", path=path, expected=SEQUENCES_EXPECTED, source=FORMAT_DOC
        )
    line, header = first
    header = [h.strip() for h in header]
    missing = [c for c in SEQUENCE_COLUMNS if c not in header]
    unknown = [c for c in header if c not in (*SEQUENCE_COLUMNS, *OPTIONAL_SEQUENCE_COLUMNS)]
    if missing or unknown or len(set(header)) != len(header):
        parts = []
        if missing:
            parts.append("missing column(s) " + ", ".join(repr(c) for c in missing))
        if unknown:
            parts.append("unknown column(s) " + ", ".join(repr(c) for c in unknown))
        if not parts:
            parts.append("duplicate column names")
        raise DatasetError(
            "; ".join(parts) + f" (header is {header!r})",
            path=path, line=line, expected=SEQUENCES_EXPECTED, source=FORMAT_DOC,
        )
    col = {name: header.index(name) for name in header}
    has_ratings = "ratings" in col
    users: list[str] = []
    seqs: list[np.ndarray] = []
    ratings: list[np.ndarray] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        if len(row) != len(header):
            raise DatasetError(
                f"row has {len(row)} fields, the header has {len(header)}",
                path=path, line=line, expected=SEQUENCES_EXPECTED, source=FORMAT_DOC,
            )
        user = row[col["user_id"]].strip()
        if not user:
            raise DatasetError("empty user_id", path=path, line=line, source=FORMAT_DOC)
        if user in seen:
            raise DatasetError(
                f"duplicate user_id {user!r} (first on line {seen[user]})",
                path=path, line=line, source=FORMAT_DOC,
            )
        seen[user] = line
        tokens = row[col["item_ids"]].split()
        if not tokens:
            raise DatasetError(
                f"empty sequence for user {user!r}", path=path, line=line,
                expected=SEQUENCES_EXPECTED, source=FORMAT_DOC,
            )
        try:
            seq = np.fromiter((item_index[t] for t in tokens), dtype=np.int64, count=len(tokens))
        except KeyError as exc:
            raise DatasetError(
                f"unknown item id {exc.args[0]!r} for user {user!r} (not in the items file)",
                path=path, line=line, source=FORMAT_DOC,
            ) from None
        if has_ratings:
            raw = row[col["ratings"]].split()
            if len(raw) != len(tokens):
                raise DatasetError(
                    f"{len(raw)} ratings for {len(tokens)} items", path=path, line=line,
                    expected=SEQUENCES_EXPECTED, source=FORMAT_DOC,
                )
            try:
                vals = np.asarray([float(v) for v in raw], dtype=np.float32)
            except ValueError as exc:
                raise DatasetError(
                    f"non-numeric rating ({exc})", path=path, line=line, source=FORMAT_DOC
                ) from None
            if not np.isfinite(vals).all():
                raise DatasetError("non-finite rating", path=path, line=line, source=FORMAT_DOC)
            ratings.append(vals)
        users.append(user)
        seqs.append(seq)
    if not users:
        raise DatasetError("no sequences after the header", path=path, source=FORMAT_DOC)
    return tuple(users), seqs, (ratings if has_ratings else None)


def _fingerprint(
    item_ids: Sequence[str],
    item_attributes: Sequence[Sequence[str]],
    user_ids: Sequence[str],
    sequences: Sequence[np.ndarray],
    ratings: Sequence[np.ndarray] | None,
) -> str:
    digest = hashlib.sha256()
    for item, attrs in zip(item_ids, item_attributes, strict=True):
        digest.update("\x1f".join((item, *attrs)).encode() + b"\x1e")
    for user, seq in zip(user_ids, sequences, strict=True):
        digest.update(user.encode() + b"\x1f" + np.ascontiguousarray(seq).tobytes() + b"\x1e")
    if ratings is not None:
        for r in ratings:
            digest.update(np.ascontiguousarray(r).tobytes() + b"\x1e")
    return digest.hexdigest()


def make_dataset(
    name: str,
    *,
    item_ids: Sequence[str],
    item_columns: Sequence[str],
    item_attributes: Sequence[Sequence[str]],
    user_ids: Sequence[str],
    sequences: Sequence[np.ndarray],
    ratings: Sequence[np.ndarray] | None = None,
) -> SequenceDataset:
    """Assemble a :class:`SequenceDataset` (computing its fingerprint)."""
    seqs = tuple(np.asarray(s, dtype=np.int64) for s in sequences)
    rats = tuple(np.asarray(r, dtype=np.float32) for r in ratings) if ratings is not None else None
    attrs = tuple(tuple(a) for a in item_attributes)
    return SequenceDataset(
        name=name,
        item_ids=tuple(item_ids),
        item_columns=tuple(item_columns),
        item_attributes=attrs,
        user_ids=tuple(user_ids),
        sequences=seqs,
        ratings=rats,
        fingerprint=_fingerprint(item_ids, attrs, user_ids, seqs, rats),
    )


def load_sequence_dataset(
    sequences: Path | str, items: Path | str, *, name: str = "custom"
) -> SequenceDataset:
    """Read and validate a dataset in the generic format (see the module docstring)."""
    item_ids, columns, attrs = read_items(items)
    index = {item: i for i, item in enumerate(item_ids)}
    users, seqs, ratings = read_sequences(sequences, index)
    return make_dataset(
        name,
        item_ids=item_ids,
        item_columns=columns,
        item_attributes=attrs,
        user_ids=users,
        sequences=seqs,
        ratings=ratings,
    )


def _fmt_rating(value: float) -> str:
    return f"{value:g}"


def write_sequence_dataset(dataset: SequenceDataset, folder: Path | str) -> tuple[Path, Path]:
    """Write ``dataset`` in the generic format as ``sequences.tsv`` and ``items.tsv``.

    Files are written to temporary names and renamed, so a reader never sees half a file;
    the names carry the process id, so processes writing the same folder at once (a suite's
    workers on a fresh cache) never rename each other's files away.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    items_path = folder / "items.tsv"
    seq_path = folder / "sequences.tsv"
    tmp_items = folder / f"items.tsv.tmp-{os.getpid()}"
    with tmp_items.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow([ITEM_ID_COLUMN, *dataset.item_columns])
        for item, attrs in zip(dataset.item_ids, dataset.item_attributes, strict=True):
            writer.writerow([item, *attrs])
    tmp_seq = folder / f"sequences.tsv.tmp-{os.getpid()}"
    with tmp_seq.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        head = [*SEQUENCE_COLUMNS, *(["ratings"] if dataset.ratings is not None else [])]
        writer.writerow(head)
        for u, (user, seq) in enumerate(zip(dataset.user_ids, dataset.sequences, strict=True)):
            row = [user, " ".join(dataset.item_ids[i] for i in seq.tolist())]
            if dataset.ratings is not None:
                row.append(" ".join(_fmt_rating(float(v)) for v in dataset.ratings[u]))
            writer.writerow(row)
    tmp_items.replace(items_path)
    tmp_seq.replace(seq_path)
    return seq_path, items_path
