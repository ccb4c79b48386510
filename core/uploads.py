"""Uploaded user embeddings and attribute tables: untrusted input, validated and explained.

Embeddings: `.npy` (loaded with allow_pickle=False), `.csv`, `.parquet` or `.safetensors`, with or without a
user-id column (without one, row i is user i). Attributes: CSV or Parquet with a user-id column. Every problem
is reported in words a privacy officer can act on: which file, which rows, what was expected.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .data import USER_COLUMNS, DataError, read_attribute_table

MAX_EMBEDDING_BYTES = 500 * 1024 * 1024
MIN_USERS = 20


@dataclass(frozen=True)
class UploadedEmbeddings:
    """A validated users × dimensions table, its user ids, and the attributes aligned to its rows."""

    table: np.ndarray  # float32, N × d
    user_ids: np.ndarray  # int64, N
    attributes: pd.DataFrame  # one row per table row (RangeIndex), NaN where a user has no attribute value
    warnings: tuple[str, ...] = ()


def _read(source: bytes | str | os.PathLike, name: str | None) -> tuple[bytes, str]:
    if isinstance(source, bytes):
        return source, _label(source, name, "uploaded file")
    path = Path(source)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    return path.read_bytes(), _label(source, name, "")


def _label(source: bytes | str | os.PathLike, name: str | None, default: str) -> str:
    return name or (default if isinstance(source, bytes) else Path(source).name)


def _ids_column(frame: pd.DataFrame) -> str | None:
    lower = {str(c).lower(): c for c in frame.columns}
    return next((lower[c] for c in USER_COLUMNS if c in lower), None)


def _frame_to_table(frame: pd.DataFrame, label: str, first_line: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Split a frame into the numeric table and the optional user-id column, naming any non-numeric cell.

    `first_line` is the file line of the first data row (CSV); None reports 1-based row numbers (Parquet)."""
    where = (lambda row: f"line {row + first_line}") if first_line else (lambda row: f"row {row + 1}")
    id_column = _ids_column(frame)
    ids = None
    if id_column is not None:
        raw_ids = pd.to_numeric(frame[id_column], errors="coerce")
        bad = raw_ids.isna() | (raw_ids != np.floor(raw_ids))
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{label} {where(row)}: user id {frame[id_column].iloc[row]!r} is not an integer")
        ids = raw_ids.to_numpy(np.int64)
        frame = frame.drop(columns=[id_column])
    numeric = frame.apply(pd.to_numeric, errors="coerce")
    bad_cells = numeric.isna() & frame.notna() & (frame.astype(str).apply(lambda c: c.str.strip().str.lower()) != "nan")
    if bad_cells.to_numpy().any():
        row, col = np.argwhere(bad_cells.to_numpy())[0]
        raise DataError(f"{label} {where(row)}, column '{frame.columns[col]}': {frame.iloc[row, col]!r} is not a "
                        "number; embeddings must be numeric (plus an optional user_id column)")
    return numeric.to_numpy(np.float64), ids


def load_embeddings(source: bytes | str | os.PathLike, name: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Read an embeddings file without pickle; returns (table as float64, user ids or None)."""
    raw, label = _read(source, name)
    if len(raw) == 0:
        raise DataError(f"{label}: the file is empty")
    if len(raw) > MAX_EMBEDDING_BYTES:
        raise DataError(f"{label}: {len(raw) / 1e6:.0f} MB is over the {MAX_EMBEDDING_BYTES / 1e6:.0f} MB limit")
    suffix = Path(label).suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(io.BytesIO(raw), allow_pickle=False)
        except ValueError as error:
            if "pickle" in str(error).lower():
                raise DataError(f"{label}: this .npy file holds Python objects (pickled data), which are never "
                                "loaded because they can run code; save a plain numeric array instead "
                                "(np.save(path, table.astype('float32')))") from error
            raise DataError(f"{label}: not a valid .npy file ({error})") from error
        if array.dtype.kind not in "fiu":
            raise DataError(f"{label}: expected a numeric array, found dtype {array.dtype}")
        return np.asarray(array, np.float64), None
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load

        try:
            tensors = load(raw)
        except (SafetensorError, Exception) as error:  # the parser raises several types on corrupt input
            raise DataError(f"{label}: not a readable safetensors file ({error})") from error
        matrices = {k: v for k, v in tensors.items() if v.ndim == 2}
        if len(matrices) != 1:
            raise DataError(f"{label}: expected exactly one 2-D tensor (users × dimensions), found "
                            f"{ {k: v.shape for k, v in tensors.items()} }")
        ids = tensors.get("user_ids")
        return np.asarray(next(iter(matrices.values())), np.float64), None if ids is None else ids.astype(np.int64)
    if suffix == ".parquet":
        try:
            frame = pd.read_parquet(io.BytesIO(raw))
        except Exception as error:  # pyarrow raises several types on malformed files
            raise DataError(f"{label}: not a readable Parquet file ({error})") from error
        return _frame_to_table(frame, label)
    if suffix in (".csv", ".tsv", ".txt"):
        text = raw.decode("utf-8-sig", errors="replace")
        first = text.splitlines()[0] if text.strip() else ""
        has_header = any(ch.isalpha() for ch in first.replace("e-", "").replace("e+", "").replace("nan", "").replace("inf", ""))
        sep = "\t" if "\t" in first else ","
        frame = pd.read_csv(io.StringIO(text), sep=sep, header=0 if has_header else None, dtype=str)
        return _frame_to_table(frame, label, first_line=2 if has_header else 1)
    raise DataError(f"{label}: unsupported file type {suffix or '(none)'}; use .npy, .csv, .parquet or .safetensors")


def load_attributes(source: bytes | str | os.PathLike, name: str | None = None) -> pd.DataFrame:
    """An attributes table (CSV or Parquet) indexed by integer user id."""
    raw, label = _read(source, name)
    if Path(label).suffix.lower() == ".parquet":
        try:
            frame = pd.read_parquet(io.BytesIO(raw))
        except Exception as error:
            raise DataError(f"{label}: not a readable Parquet file ({error})") from error
        buffer = io.BytesIO()
        frame.to_csv(buffer, index=False)
        raw = buffer.getvalue()
    return read_attribute_table(raw, label)


def prepare_upload(
    embeddings: bytes | str | os.PathLike, attributes: bytes | str | os.PathLike,
    embeddings_name: str | None = None, attributes_name: str | None = None,
) -> UploadedEmbeddings:
    """Load both files and check them against each other: shape, NaN/inf, matching ids."""
    table, ids = load_embeddings(embeddings, embeddings_name)
    emb_label = _label(embeddings, embeddings_name, "embeddings file")
    attr_label = _label(attributes, attributes_name, "attributes file")
    if table.ndim != 2:
        raise DataError(f"{emb_label}: expected a 2-D table (users × dimensions), found shape {table.shape}")
    if table.shape[0] < MIN_USERS or table.shape[1] < 2:
        raise DataError(f"{emb_label}: {table.shape[0]} users × {table.shape[1]} dimensions is too small; an audit "
                        f"needs at least {MIN_USERS} users and 2 dimensions")
    finite = np.isfinite(table).all(1)
    if not finite.all():
        rows = np.flatnonzero(~finite)
        raise DataError(f"{emb_label}: {len(rows)} rows contain NaN or infinite values (first rows: "
                        f"{', '.join(str(r + 1) for r in rows[:5])}); remove or repair them before the audit")
    if ids is None:
        ids = np.arange(len(table), dtype=np.int64)
        id_note = (f"{emb_label} has no user-id column, so row i was taken as user i (0-based), matched against "
                   f"{attr_label}'s user ids")
    else:
        id_note = ""
        duplicated = pd.Series(ids).duplicated()
        if duplicated.any():
            raise DataError(f"{emb_label}: user id {ids[duplicated.to_numpy()][0]} appears more than once")
    attribute_table = load_attributes(attributes, attributes_name)
    if attribute_table.shape[1] == 0:
        raise DataError(f"{attr_label}: no attribute columns besides the user id")
    in_embeddings = set(ids.tolist())
    in_attributes = set(attribute_table.index.tolist())
    missing = sorted(in_embeddings - in_attributes)
    extra = sorted(in_attributes - in_embeddings)
    matched = len(in_embeddings & in_attributes)
    if matched < MIN_USERS:
        hint = f" {id_note}." if id_note else ""
        raise DataError(
            f"only {matched} user ids appear in both files: {len(missing)} ids of {emb_label} are not in "
            f"{attr_label} (e.g. {missing[:5]}) and {len(extra)} ids of {attr_label} are not in {emb_label} "
            f"(e.g. {extra[:5]}).{hint} Check that both files use the same user ids."
        )
    warnings = [id_note] if id_note else []
    if missing:
        warnings.append(f"{len(missing)} users of {emb_label} have no row in {attr_label} (e.g. {missing[:5]}); "
                        "they are left out of the attacks")
    if extra:
        warnings.append(f"{len(extra)} users of {attr_label} are not in {emb_label} (e.g. {extra[:5]}); ignored")
    aligned = attribute_table.reindex(ids)
    aligned.index = pd.RangeIndex(len(ids))
    return UploadedEmbeddings(table.astype(np.float32), ids, aligned, tuple(warnings))


def save_embeddings(path: str | os.PathLike, table: np.ndarray, user_ids: np.ndarray | None, like: str = ".csv"
                    ) -> Path:
    """Write an (edited) embeddings table in the format of the upload it came from, user ids kept: CSV or Parquet
    with a user_id column, safetensors with a user_ids array, .npy in the upload's row order (it has no ids). The
    result loads back through `load_embeddings` to the same numbers."""
    path = Path(path)
    suffix = path.suffix.lower() or like.lower()
    if not path.suffix:
        path = path.with_suffix(suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = np.asarray(table, dtype=np.float32)
    if suffix == ".npy":
        np.save(path, table, allow_pickle=False)
    elif suffix == ".safetensors":
        from safetensors.numpy import save_file

        tensors = {"embeddings": np.ascontiguousarray(table)}
        if user_ids is not None:
            tensors["user_ids"] = np.asarray(user_ids, dtype=np.int64)
        save_file(tensors, str(path))
    elif suffix in (".csv", ".parquet"):
        frame = pd.DataFrame(table, columns=[f"dim_{i}" for i in range(table.shape[1])])
        if user_ids is not None:
            frame.insert(0, "user_id", np.asarray(user_ids, dtype=np.int64))
        if suffix == ".csv":
            frame.to_csv(path, index=False, float_format="%.8g")
        else:
            frame.to_parquet(path, index=False)
    else:
        raise DataError(f"{path.name}: cannot write {suffix} files; use .npy, .csv, .parquet or .safetensors")
    return path
