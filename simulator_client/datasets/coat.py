"""Loader for the Coat dataset (Schnabel et al., ICML 2016) and its dense pseudo-GT matrix."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simulator_client.datasets.errors import DatasetError
from simulator_client.datasets.paths import dataset_file

COAT_SOURCE = (
    "Coat (Schnabel et al., 'Recommendations as Treatments', ICML 2016); pseudo ground truth "
    "from RL4Rec (coat_pseudoGT_ratingM.ascii). See shared/data/README.md, section 1."
)
ITEM_FIELDS = ("gender", "jackettype", "color", "onfrontpage")
USER_FIELDS = ("gender", "age", "location", "fashioninterest")


@dataclass(frozen=True)
class CoatData:
    """All Coat files, decoded. Shapes use U = 290 users, I = 300 items."""

    train: np.ndarray
    """[U, I] int8 ratings the users chose to give (MNAR); 0 = unobserved."""
    test: np.ndarray
    """[U, I] int8 ratings of randomly assigned items (MAR); 0 = unobserved."""
    pseudo_gt: np.ndarray
    """[U, I] int8 dense pseudo ground-truth ratings, 1–5."""
    user_features: np.ndarray
    """[U, 4] int64 category codes for USER_FIELDS."""
    item_features: np.ndarray
    """[I, 4] int64 category codes for ITEM_FIELDS."""
    user_vocab: tuple[tuple[str, ...], ...]
    """Category names per user field."""
    item_vocab: tuple[tuple[str, ...], ...]
    """Category names per item field."""
    item_text: tuple[str, ...]
    """Human-readable text per item, e.g. "women's black bomber jacket"."""
    fingerprint: str
    """SHA-256 over the raw files: the cache key of anything derived from them."""

    @property
    def num_users(self) -> int:
        return int(self.train.shape[0])

    @property
    def num_items(self) -> int:
        return int(self.train.shape[1])


def _read_matrix(rel: str, *, shape: tuple[int, int] | None, lo: int, hi: int) -> np.ndarray:
    path = dataset_file(
        rel,
        expected="whitespace-separated integer matrix, one row per user",
        source=COAT_SOURCE,
    )
    rows: list[list[int]] = []
    with path.open() as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                values = [int(float(tok)) for tok in line.split()]
            except ValueError as exc:
                raise DatasetError(
                    f"non-numeric value ({exc})", path=path, line=lineno, source=COAT_SOURCE
                ) from None
            if rows and len(values) != len(rows[0]):
                raise DatasetError(
                    f"row has {len(values)} columns, expected {len(rows[0])}",
                    path=path,
                    line=lineno,
                    source=COAT_SOURCE,
                )
            bad = [v for v in values if v < lo or v > hi]
            if bad:
                raise DatasetError(
                    f"value {bad[0]} outside [{lo}, {hi}]", path=path, line=lineno,
                    source=COAT_SOURCE,
                )
            rows.append(values)
    if not rows:
        raise DatasetError("file is empty", path=path, source=COAT_SOURCE)
    mat = np.asarray(rows, dtype=np.int8)
    if shape is not None and mat.shape != shape:
        raise DatasetError(
            f"matrix has shape {mat.shape}, expected {shape}", path=path, source=COAT_SOURCE
        )
    return mat


def _read_tsv(rel: str, columns: tuple[str, ...]) -> tuple[list[list[str]], Path]:
    expected = "tab-separated with header " + "\t".join(columns)
    path = dataset_file(rel, expected=expected, source=COAT_SOURCE)
    with path.open(newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != columns:
            raise DatasetError(
                f"header is {header!r}", path=path, line=1, expected=expected, source=COAT_SOURCE
            )
        rows: list[list[str]] = []
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(columns):
                raise DatasetError(
                    f"row has {len(row)} fields, expected {len(columns)}",
                    path=path,
                    line=lineno,
                    expected=expected,
                    source=COAT_SOURCE,
                )
            if row[0] != str(len(rows)):
                raise DatasetError(
                    f"index {row[0]!r} out of order (expected {len(rows)})",
                    path=path,
                    line=lineno,
                    source=COAT_SOURCE,
                )
            rows.append(row[1:])
    return rows, path


def _encode(rows: list[list[str]]) -> tuple[np.ndarray, tuple[tuple[str, ...], ...]]:
    n_fields = len(rows[0]) if rows else 0
    vocab = tuple(tuple(sorted({r[f] for r in rows})) for f in range(n_fields))
    index = [{v: i for i, v in enumerate(vs)} for vs in vocab]
    codes = np.asarray([[index[f][r[f]] for f in range(n_fields)] for r in rows], dtype=np.int64)
    return codes, vocab


def item_description(gender: str, jackettype: str, color: str) -> str:
    """Readable item text used by judges and reports: "women's black bomber jacket"."""
    who = {"men": "men's", "women": "women's"}.get(gender, gender)
    kind = "jacket" if jackettype in ("other", "") else f"{jackettype} jacket"
    colour = "" if color in ("other", "multi", "") else f"{color} "
    if color == "multi":
        colour = "multicolour "
    return f"{who} {colour}{kind}"


def load_coat() -> CoatData:
    """Load and validate every Coat file from the data directory."""
    train = _read_matrix("coat/train.ascii", shape=None, lo=0, hi=5)
    n_users, n_items = train.shape
    test = _read_matrix("coat/test.ascii", shape=(n_users, n_items), lo=0, hi=5)
    gt = _read_matrix(
        "coat/rl4rec_coat_pseudoGT_ratingM.ascii", shape=(n_users, n_items), lo=1, hi=5
    )
    item_rows, item_path = _read_tsv("coat/items.tsv", ("item_idx", *ITEM_FIELDS))
    user_rows, user_path = _read_tsv("coat/users.tsv", ("user_idx", *USER_FIELDS))
    if len(item_rows) != n_items:
        raise DatasetError(
            f"{len(item_rows)} items, but the rating matrices have {n_items} columns",
            path=item_path,
            source=COAT_SOURCE,
        )
    if len(user_rows) != n_users:
        raise DatasetError(
            f"{len(user_rows)} users, but the rating matrices have {n_users} rows",
            path=user_path,
            source=COAT_SOURCE,
        )
    item_codes, item_vocab = _encode(item_rows)
    user_codes, user_vocab = _encode(user_rows)
    text = tuple(item_description(r[0], r[1], r[2]) for r in item_rows)
    digest = hashlib.sha256()
    for arr in (train, test, gt, item_codes, user_codes):
        digest.update(np.ascontiguousarray(arr).tobytes())
    return CoatData(
        train=train,
        test=test,
        pseudo_gt=gt,
        user_features=user_codes,
        item_features=item_codes,
        user_vocab=user_vocab,
        item_vocab=item_vocab,
        item_text=text,
        fingerprint=digest.hexdigest(),
    )
