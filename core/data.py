"""Interaction datasets: loading (MovieLens, generic CSV, built-in synthetic demo), validation, k-core, splits.

Everything downstream works on contiguous integer indices 0..N-1 (users) and 0..M-1 (items); the raw ids from
the files are kept in `user_ids` / `item_ids` so results can be mapped back and saved models can be matched.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

MIN_INTERACTIONS = 5  # default k for the k-core filter (SPEC section 1)
SPLIT_PARTS = {"train": 0, "valid": 1, "validation": 1, "val": 1, "dev": 1, "test": 2}  # a file's own split column


class DataError(ValueError):
    """A problem with an input file or table, phrased for the person who supplied it."""


# --------------------------------------------------------------------------------------------- dataset types


@dataclass(frozen=True)
class InteractionDataset:
    """Implicit-feedback interactions with contiguous indices, raw-id maps and a per-user attribute table.

    `attributes` has one row per user index (0..n_users-1), any columns (may be empty); missing values are NaN.
    """

    name: str
    user_ids: np.ndarray  # raw id of user index u
    item_ids: np.ndarray  # raw id of item index i
    users: np.ndarray  # int64, one entry per interaction
    items: np.ndarray  # int64, one entry per interaction
    attributes: pd.DataFrame = field(default_factory=pd.DataFrame)
    timestamps: np.ndarray | None = None
    parts: np.ndarray | None = None  # the file's own split per interaction (0 train, 1 valid, 2 test), or None
    notes: tuple[str, ...] = ()  # how the file was read: encoding, rows the threshold and the k-core removed

    @property
    def split_mode(self) -> str:
        """'file' when the interactions carry their own split column, else 'random' (seeded per-user 80/10/10)."""
        return "random" if self.parts is None else "file"

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return len(self.users)

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of the interactions and id maps: a saved model is only valid for the same fingerprint."""
        digest = hashlib.sha256()
        arrays = (self.user_ids, self.item_ids, self.users, self.items) + (() if self.parts is None else (self.parts,))
        for array in arrays:  # a file's own split is part of the data: another split is another dataset
            digest.update(np.ascontiguousarray(array).astype(np.int64, copy=False).tobytes())
        return digest.hexdigest()[:16]

    def statistics(self) -> dict[str, float | int | str]:
        """Headline numbers for the dashboard: sizes, density and interactions per user."""
        per_user = np.bincount(self.users, minlength=self.n_users)
        return {
            "dataset": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
            "density": self.n_interactions / max(1, self.n_users * self.n_items),
            "median interactions per user": float(np.median(per_user)) if self.n_users else 0.0,
            "attributes": ", ".join(map(str, self.attributes.columns)) or "none",
        }


@dataclass(frozen=True)
class Split:
    """A per-user train/validation/test split of one dataset; each part is an (n, 2) int64 array of (user, item)."""

    dataset: InteractionDataset
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    seed: int
    mode: str = "random"  # "random": seeded per-user 80/10/10; "file": the file's split column (valid carved from train)

    def describe(self) -> str:
        """Which split is in use, in words, with its sizes."""
        sizes = f"train {len(self.train):,}, validation {len(self.valid):,}, test {len(self.test):,}"
        if self.mode == "file":
            return f"the file's own split column ({sizes}; validation carved from its training part, seed {self.seed})"
        return f"per-user random split 80/10/10, seed {self.seed} ({sizes})"

    @property
    def n_users(self) -> int:
        return self.dataset.n_users

    @property
    def n_items(self) -> int:
        return self.dataset.n_items

    def matrix(self, part: str) -> sp.csr_matrix:
        """The binary user×item CSR matrix of one part ('train', 'valid' or 'test')."""
        pairs = getattr(self, part)
        data = np.ones(len(pairs), dtype=np.float32)
        mat = sp.csr_matrix((data, (pairs[:, 0], pairs[:, 1])), shape=(self.n_users, self.n_items))
        mat.sum_duplicates()
        mat.data[:] = 1.0
        return mat

    @cached_property
    def train_matrix(self) -> sp.csr_matrix:
        return self.matrix("train")


# --------------------------------------------------------------------------------------------- building


def from_interactions(
    name: str,
    raw_users: np.ndarray,
    raw_items: np.ndarray,
    attributes: pd.DataFrame | None = None,
    timestamps: np.ndarray | None = None,
    parts: np.ndarray | None = None,
    notes: tuple[str, ...] = (),
) -> InteractionDataset:
    """Index raw ids contiguously, drop duplicate pairs, and align the attribute table (indexed by raw user id).
    With `parts` (a file's own split), a pair listed twice keeps its test label over train, so no test pair is
    ever trained on."""
    raw_users = np.asarray(raw_users, dtype=np.int64)
    raw_items = np.asarray(raw_items, dtype=np.int64)
    if len(raw_users) == 0:
        raise DataError(f"{name}: no interactions left; check the file and the rating threshold")
    user_ids, users = np.unique(raw_users, return_inverse=True)
    item_ids, items = np.unique(raw_items, return_inverse=True)
    pair_key = users.astype(np.int64) * len(item_ids) + items
    if parts is not None:
        parts = np.asarray(parts, dtype=np.int64)
        order = np.lexsort((-parts, pair_key))  # within a pair, the highest part (test) first
        _, first_sorted = np.unique(pair_key[order], return_index=True)
        first = order[first_sorted]
    else:
        _, first = np.unique(pair_key, return_index=True)
    keep = np.sort(first)
    aligned = _align_attributes(attributes, user_ids)
    return InteractionDataset(
        name=name,
        user_ids=user_ids,
        item_ids=item_ids,
        users=users[keep].astype(np.int64),
        items=items[keep].astype(np.int64),
        attributes=aligned,
        timestamps=None if timestamps is None else np.asarray(timestamps)[keep],
        parts=None if parts is None else parts[keep],
        notes=tuple(notes),
    )


def _align_attributes(attributes: pd.DataFrame | None, user_ids: np.ndarray) -> pd.DataFrame:
    """One row per user index, in index order; users absent from the table get NaN."""
    if attributes is None or attributes.empty:
        return pd.DataFrame(index=pd.RangeIndex(len(user_ids)))
    aligned = attributes.reindex(user_ids)
    aligned.index = pd.RangeIndex(len(user_ids))
    return aligned


def kcore(dataset: InteractionDataset, k: int = MIN_INTERACTIONS) -> InteractionDataset:
    """Keep users and items with at least k interactions, repeating until stable (SPEC section 1)."""
    if k <= 1:
        return replace(dataset, notes=(*dataset.notes, "no k-core filter (k = 1): every user and item kept"))
    keep = np.ones(dataset.n_interactions, dtype=bool)
    while True:
        user_counts = np.bincount(dataset.users[keep], minlength=dataset.n_users)
        item_counts = np.bincount(dataset.items[keep], minlength=dataset.n_items)
        still = keep & (user_counts[dataset.users] >= k) & (item_counts[dataset.items] >= k)
        if still.sum() == keep.sum():
            break
        keep = still
    if not keep.any():
        raise DataError(f"{dataset.name}: no user and item has {k} or more interactions; lower the k-core filter")
    attributes = dataset.attributes.set_axis(dataset.user_ids)
    kept = from_interactions(
        dataset.name,
        dataset.user_ids[dataset.users[keep]],
        dataset.item_ids[dataset.items[keep]],
        attributes,
        None if dataset.timestamps is None else dataset.timestamps[keep],
        None if dataset.parts is None else dataset.parts[keep],
    )
    note = (f"k-core filter (k = {k}, repeated until every user and item has at least {k} interactions) removed "
            f"{dataset.n_users - kept.n_users:,} of {dataset.n_users:,} users, {dataset.n_items - kept.n_items:,} of "
            f"{dataset.n_items:,} items and {dataset.n_interactions - kept.n_interactions:,} of "
            f"{dataset.n_interactions:,} interactions")
    return replace(kept, notes=(*dataset.notes, note))


def split_per_user(
    dataset: InteractionDataset, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0,
    mode: str = "auto",
) -> Split:
    """Seeded random per-user split; every user with ≥3 interactions gets at least one valid and one test item.

    When the interactions carry their own split (`dataset.parts`, mode 'auto' or 'file'), it is honoured: its test
    pairs are the test set, never trained on; validation is its valid pairs, or when it has none, carved per user
    from its training part (the `ratios[1]` share, seeded). mode 'random' ignores a file's split."""
    if abs(sum(ratios) - 1.0) > 1e-6:
        raise ValueError(f"split ratios must sum to 1, got {ratios}")
    if mode not in ("auto", "file", "random"):
        raise ValueError(f"split mode must be auto, file or random, got {mode!r}")
    if mode == "file" and dataset.parts is None:
        raise DataError(f"{dataset.name}: this model was trained on the file's own split, but the interactions have "
                        "no 'split' column now; load the same file")
    if dataset.parts is not None and mode != "random":
        return _file_split(dataset, ratios[1], seed)
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(dataset.n_interactions), dataset.users))
    users = dataset.users[order]
    counts = np.bincount(users, minlength=dataset.n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(users)) - starts[users]
    n = counts[users]
    n_test = np.where(n >= 3, np.maximum(1, np.round(n * ratios[2])), 0)
    n_valid = np.where(n >= 3, np.maximum(1, np.round(n * ratios[1])), 0)
    part = np.where(rank < n_test, 2, np.where(rank < n_test + n_valid, 1, 0))
    pairs = np.stack([users, dataset.items[order]], axis=1).astype(np.int64)

    def sorted_part(p: int) -> np.ndarray:
        chosen = pairs[part == p]
        return chosen[np.lexsort((chosen[:, 1], chosen[:, 0]))]

    return Split(dataset, sorted_part(0), sorted_part(1), sorted_part(2), seed)


def _sorted_pairs(pairs: np.ndarray) -> np.ndarray:
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def _file_split(dataset: InteractionDataset, valid_share: float, seed: int) -> Split:
    """The file's own train/test (and valid) parts; without valid rows, each user's validation items are drawn
    from its training part (users with ≥3 training items give max(1, round(share × n)))."""
    pairs = np.stack([dataset.users, dataset.items], axis=1).astype(np.int64)
    parts = dataset.parts
    test, train = pairs[parts == 2], pairs[parts == 0]
    if (parts == 1).any():
        valid = pairs[parts == 1]
    else:
        rng = np.random.default_rng(seed)
        order = np.lexsort((rng.random(len(train)), train[:, 0]))
        train = train[order]
        counts = np.bincount(train[:, 0], minlength=dataset.n_users)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.arange(len(train)) - starts[train[:, 0]]
        n = counts[train[:, 0]]
        n_valid = np.where(n >= 3, np.maximum(1, np.round(n * valid_share)), 0)
        carved = rank < n_valid
        valid, train = train[carved], train[~carved]
    return Split(dataset, _sorted_pairs(train), _sorted_pairs(valid), _sorted_pairs(test), seed, mode="file")


# --------------------------------------------------------------------------------------------- file loaders


STREAMLIT_CONFIG = Path(__file__).resolve().parents[1] / ".streamlit" / "config.toml"
DEFAULT_UPLOAD_MB = 200  # Streamlit's own default, used only when the config does not set server.maxUploadSize


def upload_limit_mb(config: str | os.PathLike | None = None) -> int:
    """The one size limit for uploaded files, in MB: `[server] maxUploadSize` of .streamlit/config.toml, which
    Streamlit enforces in the browser and the loaders enforce on the bytes they are given. Files named on the
    command line are not limited by it (larger tables go through the CLI)."""
    import tomllib

    try:
        with open(config or STREAMLIT_CONFIG, "rb") as handle:
            settings = tomllib.load(handle)
    except FileNotFoundError:
        return DEFAULT_UPLOAD_MB
    return int(settings.get("server", {}).get("maxUploadSize", DEFAULT_UPLOAD_MB))


def check_upload_size(data: bytes, file_label: str) -> None:
    """Refuse uploaded bytes over the configured limit, saying where larger tables go."""
    limit = upload_limit_mb()
    if len(data) > limit * 1024 * 1024:
        raise DataError(f"{file_label}: {len(data) / 2**20:,.0f} MB is over the {limit} MB upload limit (set in "
                        ".streamlit/config.toml, server.maxUploadSize); use the command line (python -m core audit "
                        "--embeddings FILE --attributes FILE) for larger tables")


def decode_text(data: bytes, file_label: str) -> tuple[str, str | None]:
    """Text of a file and a note when it was not UTF-8. UTF-8 (with or without a byte-order mark) is read
    silently; anything else is read as Windows-1252 (a superset of latin-1 for printable text), or latin-1 when
    that fails, and the note says so, so that garbled names are never shown without a word."""
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as error:
        where = f"byte {error.start:,}"
    for encoding, label in (("cp1252", "Windows-1252 (latin-1)"), ("latin-1", "latin-1 (ISO-8859-1)")):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        return text, (f"{file_label} is not UTF-8 (first non-UTF-8 {where}); it was read as {label}. Check that "
                      "names with accents look right; save it as UTF-8 to avoid this note")
    raise AssertionError("latin-1 decodes every byte string")  # pragma: no cover


def _check_size(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path.name}: the file is empty")


def _integer_column(values: pd.Series, file: str, column: str, first_line: int) -> np.ndarray:
    """Parse a column of integer ids, naming the first bad line (1-based, as an editor shows it)."""
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() | (numeric != np.floor(numeric))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{file} line {row + first_line}: {column} {values.iloc[row]!r} is not an integer id; "
            f"every {column} must be a whole number"
        )
    return numeric.to_numpy(dtype=np.int64)


def _numeric_column(values: pd.Series, file: str, column: str, first_line: int) -> np.ndarray:
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() | ~np.isfinite(numeric)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{file} line {row + first_line}: {column} {values.iloc[row]!r} is not a number")
    return numeric.to_numpy(dtype=np.float64)


def _read_separated(path: Path, sep: str, names: list[str], file_label: str) -> pd.DataFrame:
    """Read a headerless MovieLens-style file; a line with the wrong number of fields is named."""
    _check_size(path)
    text = path.read_bytes().decode("latin-1")
    rows = [line.split(sep) for line in text.splitlines() if line.strip()]
    for line_no, fields in enumerate(rows, start=1):
        if len(fields) < len(names):
            hint = " (is the separator right?)" if len(fields) == 1 else ""
            raise DataError(
                f"{file_label} line {line_no}: expected {len(names)} fields separated by {sep!r}, "
                f"found {len(fields)}{hint}"
            )
    return pd.DataFrame([f[: len(names)] for f in rows], columns=names)


def apply_threshold(ratings: np.ndarray, threshold: float | None) -> np.ndarray:
    """Mask of interactions kept as positives: all when threshold is None, else rating ≥ threshold."""
    if threshold is None:
        return np.ones(len(ratings), dtype=bool)
    return ratings >= threshold


def _threshold_note(keep: np.ndarray, threshold: float | None) -> tuple[str, ...]:
    if threshold is None:
        return ("every rating counts as an interaction (no rating threshold)",)
    return (f"rating threshold {threshold:g}: {int((~keep).sum()):,} of {len(keep):,} ratings below it removed",)


def load_movielens_100k(
    folder: str | os.PathLike, rating_threshold: float | None = None, k: int = MIN_INTERACTIONS
) -> InteractionDataset:
    """MovieLens-100K from its folder (`u.data`, `u.user`); attributes gender, age (years), occupation."""
    folder = Path(folder)
    ratings = _read_separated(folder / "u.data", "\t", ["user", "item", "rating", "timestamp"], "u.data")
    users = _integer_column(ratings["user"], "u.data", "user", 1)
    items = _integer_column(ratings["item"], "u.data", "item", 1)
    values = _numeric_column(ratings["rating"], "u.data", "rating", 1)
    info = _read_separated(folder / "u.user", "|", ["user", "age", "gender", "occupation", "zip"], "u.user")
    info_ids = _integer_column(info["user"], "u.user", "user", 1)
    attributes = pd.DataFrame(
        {
            "gender": info["gender"].str.strip().to_numpy(),
            "age": _integer_column(info["age"], "u.user", "age", 1),
            "occupation": info["occupation"].str.strip().to_numpy(),
        },
        index=info_ids,
    )
    keep = apply_threshold(values, rating_threshold)
    dataset = from_interactions("ml-100k", users[keep], items[keep], attributes,
                                notes=_threshold_note(keep, rating_threshold))
    return kcore(dataset, k)


ML1M_AGE_BUCKETS = {1: "<18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}


def load_movielens_1m(
    folder: str | os.PathLike, rating_threshold: float | None = None, k: int = MIN_INTERACTIONS
) -> InteractionDataset:
    """MovieLens-1M from its folder (`ratings.dat`, `users.dat`); age keeps the dataset's own buckets."""
    folder = Path(folder)
    ratings = _read_separated(folder / "ratings.dat", "::", ["user", "item", "rating", "timestamp"], "ratings.dat")
    users = _integer_column(ratings["user"], "ratings.dat", "user", 1)
    items = _integer_column(ratings["item"], "ratings.dat", "item", 1)
    values = _numeric_column(ratings["rating"], "ratings.dat", "rating", 1)
    info = _read_separated(folder / "users.dat", "::", ["user", "gender", "age", "occupation", "zip"], "users.dat")
    info_ids = _integer_column(info["user"], "users.dat", "user", 1)
    age_codes = _integer_column(info["age"], "users.dat", "age", 1)
    attributes = pd.DataFrame(
        {
            "gender": info["gender"].str.strip().to_numpy(),
            "age": [ML1M_AGE_BUCKETS.get(int(a), str(a)) for a in age_codes],
            "occupation": info["occupation"].str.strip().to_numpy(),
        },
        index=info_ids,
    )
    keep = apply_threshold(values, rating_threshold)
    return kcore(from_interactions("ml-1m", users[keep], items[keep], attributes,
                                   notes=_threshold_note(keep, rating_threshold)), k)


USER_COLUMNS = ("user", "user_id", "userid", "uid")
ITEM_COLUMNS = ("item", "item_id", "itemid", "iid", "movie_id", "movieid")


def _sniff_table(data: bytes, file_label: str, notes: list[str] | None = None) -> pd.DataFrame:
    """Parse a delimited text table with a header row; the separator is detected (comma, tab, semicolon, |). A
    note on the text encoding (when not UTF-8) is appended to `notes`."""
    if not data.strip():
        raise DataError(f"{file_label}: the file is empty")
    text, note = decode_text(data, file_label)
    if note and notes is not None:
        notes.append(note)
    sample = "\n".join(text.splitlines()[:50])
    try:
        sep = csv.Sniffer().sniff(sample, delimiters=",\t;|").delimiter
    except csv.Error:
        sep = ","
    try:
        frame = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, skipinitialspace=True, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DataError(f"{file_label}: could not be read as a table ({error})") from error
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise DataError(f"{file_label}: the file has a header but no rows")
    return frame


def _find_column(frame: pd.DataFrame, candidates: tuple[str, ...], what: str, file_label: str) -> str:
    lower = {c.lower(): c for c in frame.columns}
    for name in candidates:
        if name in lower:
            return lower[name]
    found = ", ".join(map(repr, frame.columns))
    hint = ""
    if len(frame.columns) == 1 and any(s in frame.columns[0] for s in ",\t;| "):
        hint = " The header looks like one column: is the separator a comma, tab, semicolon or |?"
    raise DataError(
        f"{file_label}: missing the {what} column; expected one of {', '.join(candidates)}, found {found}.{hint}"
    )


def read_attribute_table(data: bytes, file_label: str, notes: list[str] | None = None) -> pd.DataFrame:
    """An attributes CSV: a user-id column plus any attribute columns; returns a frame indexed by integer user id.
    A note on the text encoding (when not UTF-8) is appended to `notes`."""
    frame = _sniff_table(data, file_label, notes)
    return attribute_frame(frame, file_label)


def attribute_frame(frame: pd.DataFrame, file_label: str) -> pd.DataFrame:
    """A parsed attributes table (strings) indexed by its integer user-id column; numeric columns become numbers."""
    user_col = _find_column(frame, USER_COLUMNS, "user id", file_label)
    ids = _integer_column(frame[user_col], file_label, user_col, 2)
    duplicated = pd.Series(ids).duplicated()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated.to_numpy())[0])
        raise DataError(f"{file_label} line {row + 2}: user {ids[row]} appears twice; give one row per user")
    attributes = frame.drop(columns=[user_col]).replace("", np.nan)
    for column in attributes.columns:
        numeric = pd.to_numeric(attributes[column], errors="coerce")
        if numeric.notna().sum() == attributes[column].notna().sum():
            attributes[column] = numeric
    attributes.index = ids
    return attributes


def load_interactions_csv(
    data: bytes | str | os.PathLike,
    attributes: bytes | str | os.PathLike | None = None,
    name: str = "csv",
    rating_threshold: float | None = None,
    k: int = MIN_INTERACTIONS,
    file_label: str | None = None,
    attributes_label: str | None = None,
) -> InteractionDataset:
    """A generic interactions CSV (user, item, optional rating and timestamp) and an optional attributes CSV."""
    raw, label = _bytes_of(data, file_label)
    notes: list[str] = []
    frame = _sniff_table(raw, label, notes)
    user_col = _find_column(frame, USER_COLUMNS, "user", label)
    item_col = _find_column(frame, ITEM_COLUMNS, "item", label)
    users = _integer_column(frame[user_col], label, user_col, 2)
    items = _integer_column(frame[item_col], label, item_col, 2)
    keep = np.ones(len(frame), dtype=bool)
    lower = {c.lower(): c for c in frame.columns}
    if "rating" in lower:
        ratings = _numeric_column(frame[lower["rating"]], label, lower["rating"], 2)
        keep = apply_threshold(ratings, rating_threshold)
        if rating_threshold is not None:
            notes.append(f"rating threshold {rating_threshold:g}: {int((~keep).sum()):,} of {len(keep):,} ratings "
                         f"below it removed")
    elif rating_threshold is not None:
        raise DataError(f"{label}: a rating threshold was set but the file has no 'rating' column")
    timestamps = None
    if "timestamp" in lower:
        timestamps = _numeric_column(frame[lower["timestamp"]], label, lower["timestamp"], 2)[keep]
    parts = None
    if "split" in lower:
        parts = _split_column(frame[lower["split"]], label, lower["split"])[keep]
        counts = np.bincount(parts, minlength=3)
        notes.append(f"{label} has its own split column: train {counts[0]:,}, valid {counts[1]:,}, test "
                     f"{counts[2]:,} interactions; it is used as given" + ("" if counts[1] else
                     " (validation is carved from its training part)"))
    attribute_table = None
    if attributes is not None:
        raw_attr, attr_label = _bytes_of(attributes, attributes_label)
        attribute_table = read_attribute_table(raw_attr, attr_label, notes)
    dataset = from_interactions(name, users[keep], items[keep], attribute_table, timestamps, parts, tuple(notes))
    return kcore(dataset, k)


def _split_column(values: pd.Series, file: str, column: str) -> np.ndarray:
    """A file's own split labels as part codes (0 train, 1 valid, 2 test); an unknown label is named."""
    cleaned = values.astype(str).str.strip().str.lower()
    codes = cleaned.map(SPLIT_PARTS)
    if codes.isna().any():
        row = int(np.flatnonzero(codes.isna().to_numpy())[0])
        raise DataError(f"{file} line {row + 2}: {column} {values.iloc[row]!r} is not a split name; use train, test "
                        "or valid (validation)")
    codes = codes.to_numpy(np.int64)
    if not (codes == 2).any() or not (codes == 0).any():
        raise DataError(f"{file}: the {column} column needs both train and test rows; found "
                        f"{sorted(set(cleaned))}")
    return codes


def _bytes_of(source: bytes | str | os.PathLike, label: str | None) -> tuple[bytes, str]:
    if isinstance(source, bytes):
        check_upload_size(source, label or "uploaded file")
        return source, label or "uploaded file"
    path = Path(source)
    _check_size(path)
    return path.read_bytes(), label or path.name


# --------------------------------------------------------------------------------------------- attributes


@dataclass(frozen=True)
class AttributeLabels:
    """Integer class codes for one attribute over the users that have it (`mask`), with the class names, the
    attribute's type (binary, categorical, ordinal, numeric) and notes on how it was encoded (the type's
    reason, bins, merged rare classes), so pages and reports can say what the audit attacked."""

    name: str
    codes: np.ndarray  # int64, length = mask.sum()
    classes: tuple[str, ...]
    mask: np.ndarray  # bool, length n_users: users with a known value
    kind: str = "categorical"
    notes: tuple[str, ...] = ()

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def counts(self) -> dict[str, int]:
        return dict(zip(self.classes, np.bincount(self.codes, minlength=self.n_classes).tolist()))


def encode_attribute(
    values: pd.Series,
    name: str | None = None,
    n_bins: int = 4,
    kind: str | None = None,
    min_class_size: int = 20,
    max_classes: int = 50,
) -> AttributeLabels:
    """Turn an attribute column into class codes, typed (inferred unless `kind` is given): see
    `core.attributes.encode_typed`. Integer codes with few values stay classes; only numeric columns are cut into
    `n_bins` quantile bins. A column with fewer than two classes, or too many, is refused."""
    from .attributes import encode_typed  # core.attributes imports this module

    return encode_typed(values, name, kind=kind, n_bins=n_bins, min_class_size=min_class_size,  # type: ignore[arg-type]
                        max_classes=max_classes)


# --------------------------------------------------------------------------------------------- synthetic demo

DEMO_GENDERS = ("F", "M")
DEMO_AGES = ("<25", "25-34", "35-49", "50+")
DEMO_OCCUPATIONS = ("student", "technical", "creative", "service", "retired")
# taste effects (standard deviations per latent dimension) of gender, age and occupation, over DEMO_TASTE_DIM
# dimensions, with the attribute signal spread thin over many taste dimensions as in real data. The demo is shaped
# after MovieLens-100K's observable statistics, none of them an unlearning result: a median of 64 interactions per
# user (lognormal, as heavy-tailed as MovieLens), choices as predictable (BPR-MF NDCG@20 0.27 against MovieLens-100K's
# 0.28, both with the training defaults) and as popularity-skewed (item Gini about 0.59 against 0.55); the effects
# then put a BPR-MF's gender leak at best attacker AUC 0.77-0.79 (after 15 epochs; trained to early stopping), within
# real data's 0.70-0.82. The earlier demo drew its choices so noisily (NDCG@20 0.06) that the attributes were most of
# what a model could learn of a user, so removing gender cost 4% of NDCG@20 where MovieLens loses 0.4% (measured:
# bench/RESULTS.md, "A demo shaped like MovieLens").
DEMO_TASTE_DIM = 32
DEMO_EFFECTS = (0.144, 0.12, 0.1056)
DEMO_SHARPNESS = 2.0  # inverse temperature of the users' choices: logits × this before the Gumbel draw
DEMO_POPULARITY = 1.3  # standard deviation of the items' popularity logits
DEMO_INTERACTIONS = (65, 0.8, 12, 700)  # interactions per user: lognormal median, its σ, then clipped to [min, max]


def make_synthetic(
    n_users: int = 1000, n_items: int = 1500, seed: int = 7, latent_dim: int = DEMO_TASTE_DIM, k: int = MIN_INTERACTIONS,
    effects: tuple[float, float, float] = DEMO_EFFECTS,
) -> InteractionDataset:
    """The built-in demo: users whose tastes depend on gender, an age bucket and an occupation group.

    Each user's latent taste is a sum of attribute effects plus individual noise; interactions are drawn without
    replacement from a softmax over taste·item + popularity, so a model trained on them learns embeddings from
    which the attributes can be recovered: exactly what the audit should find. Deterministic for a seed.
    """
    rng = np.random.default_rng(seed)
    gender = rng.integers(0, len(DEMO_GENDERS), n_users)
    age = rng.choice(len(DEMO_AGES), n_users, p=[0.3, 0.35, 0.22, 0.13])
    # occupation depends on age, as in real data (students are young, retirees old)
    occupation_logits = rng.normal(0, 0.3, (len(DEMO_AGES), len(DEMO_OCCUPATIONS)))
    occupation_logits[0, 0] += 1.5
    occupation_logits[3, 4] += 1.8
    occupation_probs = np.exp(occupation_logits)
    occupation_probs /= occupation_probs.sum(1, keepdims=True)
    cumulative = occupation_probs[age].cumsum(1)
    occupation = (rng.random((n_users, 1)) > cumulative).sum(1).clip(max=len(DEMO_OCCUPATIONS) - 1)

    gender_effect = rng.normal(0, effects[0], (len(DEMO_GENDERS), latent_dim))
    age_effect = rng.normal(0, effects[1], (len(DEMO_AGES), latent_dim))
    occupation_effect = rng.normal(0, effects[2], (len(DEMO_OCCUPATIONS), latent_dim))
    taste = (
        gender_effect[gender] + age_effect[age] + occupation_effect[occupation]
        + rng.normal(0, 0.7, (n_users, latent_dim))
    )
    item_factors = rng.normal(0, 1.0 / np.sqrt(latent_dim) * 1.6, (n_items, latent_dim))
    popularity = rng.normal(0, DEMO_POPULARITY, n_items)
    logits = DEMO_SHARPNESS * (taste @ item_factors.T + popularity[None, :])
    # Gumbel top-k: sampling without replacement from softmax(logits), vectorised over users
    keys = logits + rng.gumbel(size=logits.shape)
    median, sigma, fewest, most = DEMO_INTERACTIONS
    # at most half the catalogue, as in MovieLens (its most active user rated 44% of the items): a user who has seen
    # every item leaves nothing to recommend or to sample negatives from
    n_per_user = np.clip(rng.lognormal(np.log(median), sigma, n_users).astype(int), fewest, min(most, n_items // 2))
    order = np.argsort(-keys, axis=1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(n_items)[None, :].repeat(n_users, 0), axis=1)
    chosen_users, chosen_items = np.nonzero(ranks < n_per_user[:, None])
    raw_user_ids = np.arange(1, n_users + 1)
    attributes = pd.DataFrame(
        {
            "gender": np.array(DEMO_GENDERS)[gender],
            "age": np.array(DEMO_AGES)[age],
            "occupation": np.array(DEMO_OCCUPATIONS)[occupation],
        },
        index=raw_user_ids,
    )
    dataset = from_interactions("synthetic demo", raw_user_ids[chosen_users], chosen_items + 1, attributes)
    return kcore(dataset, k)


# --------------------------------------------------------------------------------------------- one entry point


def default_ml100k_dir() -> Path | None:
    """Where the MovieLens-100K folder is: $ML100K_DIR, else ../shared/data/ml-100k, else None."""
    candidates = [os.environ.get("ML100K_DIR"), Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "u.data").exists():
            return Path(candidate)
    return None


def load_dataset(spec: str, rating_threshold: float | None = None, k: int = MIN_INTERACTIONS) -> InteractionDataset:
    """Load by a short spec: 'synthetic', 'ml-100k:FOLDER', 'ml-1m:FOLDER' or 'csv:FILE[,ATTRIBUTES_FILE]'."""
    kind, _, where = spec.partition(":")
    kind = kind.strip().lower()
    if kind in ("synthetic", "demo"):
        return make_synthetic(k=k)
    if kind == "ml-100k":
        folder = where or default_ml100k_dir()
        if folder is None:
            raise DataError("ml-100k: no folder given and ../shared/data/ml-100k was not found; use ml-100k:PATH")
        return load_movielens_100k(folder, rating_threshold, k)
    if kind == "ml-1m":
        return load_movielens_1m(where, rating_threshold, k)
    if kind == "csv":
        interactions, _, attributes = where.partition(",")
        return load_interactions_csv(
            interactions, attributes or None, name=Path(interactions).stem, rating_threshold=rating_threshold, k=k
        )
    raise DataError(f"unknown data source {spec!r}; use synthetic, ml-100k:PATH, ml-1m:PATH or csv:FILE[,ATTRS]")
