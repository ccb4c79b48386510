"""Uploaded user embeddings and attribute tables: untrusted input, validated, aligned by user id, explained.

The one loader behind the pages, the command line and the tests. Embeddings: `.npy` (no ids), `.npz` or
`.safetensors` (one 2-D array, optionally a `user_ids` array), `.csv` / `.parquet` (numeric columns, optionally a
user-id column). Attributes: CSV or Parquet, with a user-id column or without one. Rows are matched to attributes
by user id whenever both files carry ids; by position only when the attributes have no id column or the caller
asks for it (`match_by_position=True`); anything else is refused, because a silent off-by-one alignment turns a
leaking table into a false "no leak". Nothing is unpickled; sizes, shapes, dtypes, ids and NaN/inf are checked,
and every refusal says which file, which row or column, what was expected and what to do.
"""
from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .data import (
    ITEM_COLUMNS, USER_COLUMNS, DataError, attribute_frame, check_upload_size, decode_text, upload_limit_mb,
)

__all__ = ["EMBEDDING_FORMATS", "ATTRIBUTE_FORMATS", "UploadedEmbeddings", "EmbeddingFile", "AttributeFile",
           "load_embeddings", "load_attributes", "prepare_upload", "embeddings_bytes", "save_embeddings",
           "attributes_bytes", "sample_pair", "upload_limit_mb", "read_audit_report", "ExternalModel",
           "prepare_external_model", "interactions_bytes", "model_tables_bytes"]

EMBEDDING_FORMATS = ("npy", "npz", "csv", "parquet", "safetensors")
ATTRIBUTE_FORMATS = ("csv", "parquet")
ID_ARRAYS = ("user_ids", "user_id", "ids", "users")  # names of the ids array inside .npz / .safetensors
ITEM_ID_ARRAYS = ("item_ids", "item_id", "ids", "items")
# columns that hold row positions, not user ids: never read as a dimension, never guessed to be ids
POSITION_COLUMNS = ("user_index", "index", "row", "row_index", "unnamed: 0", "")
MIN_USERS = 20


@dataclass(frozen=True)
class EmbeddingFile:
    """An embeddings file as read: the table (float64), its user ids when the file has them, the stored dtype."""

    label: str
    table: np.ndarray
    ids: np.ndarray | None
    dtype: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class AttributeFile:
    """An attributes file as read: indexed by user id when it has an id column, else by row position."""

    label: str
    frame: pd.DataFrame
    has_ids: bool
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class UploadedEmbeddings:
    """A validated users × dimensions table, its user ids, the attributes aligned to its rows, and how they were
    matched: `matched_by` is "id" or "position"; `unmatched_*` list the ids found in one file only."""

    table: np.ndarray  # float32, N × d
    user_ids: np.ndarray  # int64, N (row positions 0..N-1 when neither file has ids)
    attributes: pd.DataFrame  # one row per table row (RangeIndex), NaN where a user has no attribute value
    warnings: tuple[str, ...] = ()  # what a user must read: unmatched users, suspicious ids
    notes: tuple[str, ...] = ()  # how the files were read: encodings, matched by position
    matched_by: str = "id"
    n_matched: int = 0
    unmatched_embeddings: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    unmatched_attributes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    dtype: str = "float32"
    ids_in_file: bool = True  # whether the embeddings file carried user ids (exports keep them then)

    @property
    def export_ids(self) -> np.ndarray | None:
        """The ids an export of this table carries: the user ids whenever either file had them (None when both
        files were plain rows, so the export is matched by position again)."""
        return self.user_ids if self.ids_in_file else None

    def summary(self) -> dict[str, object]:
        """What was read, for the page and the command line."""
        return {"rows": int(self.table.shape[0]), "dimensions": int(self.table.shape[1]), "dtype": self.dtype,
                "matched by": self.matched_by, "users matched": self.n_matched,
                "embedding rows without attributes": int(len(self.unmatched_embeddings)),
                "attribute rows without embeddings": int(len(self.unmatched_attributes))}


# --------------------------------------------------------------------------------------------- reading


def _read(source: bytes | str | os.PathLike, name: str | None, default: str) -> tuple[bytes, str]:
    """The file's bytes and its name for messages; uploaded bytes are held to the configured size limit, files
    named on the command line are not (larger tables go through the CLI)."""
    if isinstance(source, (bytes, bytearray)):
        label = name or default
        check_upload_size(bytes(source), label)
        raw = bytes(source)
    else:
        path = Path(source)
        if not path.exists():
            raise DataError(f"{path}: file not found")
        raw, label = path.read_bytes(), name or path.name
    if not raw.strip():
        raise DataError(f"{label}: the file is empty")
    return raw, label


def _suffix(label: str) -> str:
    return Path(label).suffix.lower().lstrip(".")


def _ids_column(frame: pd.DataFrame, names: tuple[str, ...] = USER_COLUMNS) -> str | None:
    lower = {str(c).strip().lower(): c for c in frame.columns}
    return next((lower[c] for c in names if c in lower), None)


def _refuse_position_columns(frame: pd.DataFrame, label: str) -> None:
    """A column of row numbers (user_index, an unnamed pandas index) is neither a dimension nor a user id."""
    for column in frame.columns:
        name = str(column).strip().lower()
        if name in POSITION_COLUMNS or name.startswith("unnamed: "):
            raise DataError(
                f"{label}: column {str(column)!r} holds row numbers, not user ids, so it cannot say which user a row "
                "is. Rename it to user_id if it really holds the user ids; otherwise drop it (pandas: "
                "to_csv(index=False)) and add a user_id column with the users' ids")


def _check_ids(ids: np.ndarray, label: str, where) -> np.ndarray:
    duplicated = pd.Series(ids).duplicated().to_numpy()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        raise DataError(f"{label} {where(row)}: user id {ids[row]} appears more than once; give one row per user")
    return ids


def _integer_ids(values, label: str, where) -> np.ndarray:
    numeric = pd.to_numeric(pd.Series(np.asarray(values).ravel()), errors="coerce")
    bad = (numeric.isna() | (numeric != np.floor(numeric))).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{label} {where(row)}: user id {np.asarray(values).ravel()[row]!r} is not an integer; user "
                        "ids must be whole numbers")
    return _check_ids(numeric.to_numpy(np.int64), label, where)


def _frame_to_table(frame: pd.DataFrame, label: str, first_line: int | None = None,
                    id_columns: tuple[str, ...] = USER_COLUMNS) -> tuple[np.ndarray, np.ndarray | None]:
    """Split a frame into the numeric table and the optional user-id column, naming any non-numeric cell.

    `first_line` is the file line of the first data row (CSV); None reports 1-based row numbers (Parquet)."""
    where = (lambda row: f"line {row + first_line}") if first_line else (lambda row: f"row {row + 1}")
    id_column = _ids_column(frame, id_columns)
    ids = None
    if id_column is not None:
        ids = _integer_ids(frame[id_column], label, where)
        frame = frame.drop(columns=[id_column])
    _refuse_position_columns(frame, label)
    if frame.shape[1] == 0:
        raise DataError(f"{label}: no embedding columns besides the user id")
    numeric = frame.apply(pd.to_numeric, errors="coerce")
    text = frame.astype(str).apply(lambda c: c.str.strip().str.lower())
    bad_cells = numeric.isna() & frame.notna() & ~text.isin(["nan", ""])
    if bad_cells.to_numpy().any():
        row, col = np.argwhere(bad_cells.to_numpy())[0]
        raise DataError(f"{label} {where(row)}, column '{frame.columns[col]}': {frame.iloc[row, col]!r} is not a "
                        "number; embeddings must be numeric (plus an optional user_id column)")
    return numeric.to_numpy(np.float64), ids


def _npy_array(raw: bytes, label: str, what: str = ".npy file") -> np.ndarray:
    """One .npy array, checked before anything is allocated: no Python objects (pickle), and a header whose shape
    matches the bytes that follow (a truncated file or a forged header claiming terabytes is refused)."""
    stream = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version[0] == 1 else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(stream)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as error:
        raise DataError(f"{label}: not a valid {what} ({error})") from error
    if dtype.hasobject:
        raise DataError(f"{label}: this {what} holds Python objects (pickled data), which are never loaded because "
                        "they can run code; save a plain numeric array instead (np.save(path, "
                        "table.astype('float32')))")
    needed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    available = len(raw) - stream.tell()
    if needed != available:
        raise DataError(f"{label}: the {what}'s header says shape {tuple(shape)} ({needed:,} bytes of data) but "
                        f"{available:,} bytes follow; the file is truncated or corrupt")
    try:
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise DataError(f"{label}: not a valid {what} ({error})") from error


def _npz_arrays(raw: bytes, label: str) -> dict[str, np.ndarray]:
    """The arrays of an .npz, each checked like a .npy; a member that expands past 10 times the archive's size
    (a compression bomb) is refused before it is decompressed."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
        members = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise DataError(f"{label}: not a valid .npz file ({error})") from error
    if not members:
        raise DataError(f"{label}: the .npz archive holds no arrays")
    declared = sum(m.file_size for m in members)
    if declared > 10 * len(raw) + 2**20:
        raise DataError(f"{label}: the archive declares {declared:,} bytes once decompressed, more than 10 times its "
                        f"own {len(raw):,}; refused (embeddings do not compress that much)")
    arrays = {}
    for member in members:
        if not member.filename.endswith(".npy"):
            raise DataError(f"{label}: member {member.filename!r} is not a .npy array")
        try:
            data = archive.read(member)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as error:
            raise DataError(f"{label}: member {member.filename!r} cannot be read ({error})") from error
        arrays[member.filename[:-4]] = _npy_array(data, label, f"member {member.filename!r}")
    return arrays


def _numeric_array(array: np.ndarray, label: str, what: str) -> np.ndarray:
    if array.dtype.kind not in "fiu":
        raise DataError(f"{label}: {what} has dtype {array.dtype}; expected numbers (float or integer)")
    return array


def _arrays_file(arrays: dict[str, np.ndarray], label: str, id_arrays: tuple[str, ...] = ID_ARRAYS
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """One 2-D table plus an optional 1-D ids array (named user_ids, ids, …) from a .npz or .safetensors file."""
    id_key = next((k for k in arrays if k.lower() in id_arrays), None)
    matrices = {k: v for k, v in arrays.items() if k != id_key and v.ndim == 2}
    others = sorted(set(arrays) - set(matrices) - {id_key})
    if len(matrices) != 1 or others:
        raise DataError(f"{label}: expected one 2-D array (users × dimensions) and optionally a 1-D 'user_ids' array; "
                        f"found { {k: tuple(v.shape) for k, v in arrays.items()} }")
    name, table = next(iter(matrices.items()))
    table = _numeric_array(table, label, f"array {name!r}")
    ids = None
    if id_key is not None:
        raw_ids = arrays[id_key]
        if raw_ids.ndim != 1 or len(raw_ids) != len(table):
            raise DataError(f"{label}: the ids array {id_key!r} has shape {raw_ids.shape}; expected one id per row of "
                            f"{name!r} ({len(table)},)")
        ids = _integer_ids(raw_ids, label, lambda row: f"{id_key}[{row}]")
    return table, ids


def _looks_like_header(line: str) -> bool:
    """A first line with letters other than those of numbers (e, nan, inf) is a header."""
    cleaned = line.lower()
    for token in ("e-", "e+", "nan", "inf", "e"):
        cleaned = cleaned.replace(token, "")
    return any(ch.isalpha() for ch in cleaned)


def load_embeddings_file(source: bytes | str | os.PathLike, name: str | None = None, of: str = "user"
                         ) -> EmbeddingFile:
    """Read an embeddings file without pickle: the table, its ids when it carries them, its dtype, notes. `of` is
    "user" (ids in a user_id column / user_ids array) or "item" (item_id column / item_ids array)."""
    read = _read_embeddings(source, name, of)
    if read.table.size == 0:
        raise DataError(f"{read.label}: the table holds no values (shape {read.table.shape}); expected one row per "
                        f"{of} and at least one dimension")
    return read


def _read_embeddings(source: bytes | str | os.PathLike, name: str | None, of: str) -> EmbeddingFile:
    id_columns, id_arrays = (USER_COLUMNS, ID_ARRAYS) if of == "user" else (ITEM_COLUMNS, ITEM_ID_ARRAYS)
    raw, label = _read(source, name, f"{of} embeddings file")
    suffix = _suffix(label)
    notes: list[str] = []
    if suffix == "npy":
        array = _npy_array(raw, label)
        if array.ndim != 2:
            raise DataError(f"{label}: expected a 2-D table (users × dimensions), found shape {array.shape}")
        return EmbeddingFile(label, _numeric_array(array, label, "the array").astype(np.float64), None,
                             str(array.dtype))
    if suffix == "npz":
        table, ids = _arrays_file(_npz_arrays(raw, label), label, id_arrays)
        return EmbeddingFile(label, table.astype(np.float64), ids, str(table.dtype))
    if suffix == "safetensors":
        from safetensors.numpy import load

        try:
            arrays = load(raw)
        except Exception as error:  # the parser raises several types on corrupt input
            raise DataError(f"{label}: not a readable safetensors file ({error})") from error
        table, ids = _arrays_file(arrays, label, id_arrays)
        return EmbeddingFile(label, table.astype(np.float64), ids, str(table.dtype))
    if suffix == "parquet":
        frame = _read_parquet(raw, label)
        table, ids = _frame_to_table(frame, label, id_columns=id_columns)
        dtypes = sorted({str(t) for c, t in frame.dtypes.items() if c != _ids_column(frame, id_columns)})
        return EmbeddingFile(label, table, ids, "/".join(dtypes))
    if suffix in ("csv", "tsv", "txt"):
        text, note = decode_text(raw, label)
        notes += [note] if note else []
        lines = text.splitlines()
        first = next((line for line in lines if line.strip()), "")
        has_header = _looks_like_header(first)
        sep = "\t" if "\t" in first else ";" if ";" in first and "," not in first else ","
        fields = np.array([line.count(sep) for line in lines if line.strip()]) + 1  # numbers hold no separators
        short = np.flatnonzero(fields != fields[0])
        if len(short):
            line_no = int(np.flatnonzero([bool(line.strip()) for line in lines])[short[0]]) + 1
            raise DataError(f"{label} line {line_no}: {fields[short[0]]} fields where the first line has {fields[0]}; "
                            "the file looks cut short, or a value is missing or extra")
        try:
            frame = pd.read_csv(io.StringIO(text), sep=sep, header=0 if has_header else None, dtype=str,
                                keep_default_na=False, skip_blank_lines=True)
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
            raise DataError(f"{label}: could not be read as a table ({error})") from error
        if has_header:
            frame.columns = [str(c).strip() for c in frame.columns]
        else:
            frame.columns = [f"dim_{i}" for i in range(frame.shape[1])]
        table, ids = _frame_to_table(frame, label, first_line=2 if has_header else 1, id_columns=id_columns)
        if text.strip() and not text.endswith(("\n", "\r")):
            # a cut mid-number still parses ("6.2865" -> "6.28"): nothing in the bytes can tell, so say so
            notes.append(f"{label} does not end with a line break: if it was cut short (an interrupted download or "
                         f"copy), its last row ({len(table):,}) may hold a truncated number; re-export the file if "
                         "in doubt")
        return EmbeddingFile(label, table, ids, "float64 (text)", tuple(notes))
    raise DataError(f"{label}: unsupported file type .{suffix or '(none)'}; use "
                    f"{', '.join('.' + f for f in EMBEDDING_FORMATS)}")


def load_embeddings(source: bytes | str | os.PathLike, name: str | None = None
                    ) -> tuple[np.ndarray, np.ndarray | None]:
    """Read an embeddings file without pickle; returns (table as float64, user ids or None)."""
    read = load_embeddings_file(source, name)
    return read.table, read.ids


def _read_parquet(raw: bytes, label: str) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(io.BytesIO(raw))
    except Exception as error:  # pyarrow raises several types on malformed files
        raise DataError(f"{label}: not a readable Parquet file ({error})") from error
    if not isinstance(frame.index, pd.RangeIndex) or frame.index.name is not None:
        frame = frame.reset_index()  # an index saved with the file (often the user id) becomes a column
    return frame


def load_attribute_file(source: bytes | str | os.PathLike, name: str | None = None) -> AttributeFile:
    """An attributes table (CSV or Parquet): indexed by user id when it has an id column, else by row position."""
    from .data import _sniff_table

    raw, label = _read(source, name, "attributes file")
    notes: list[str] = []
    suffix = _suffix(label)
    if suffix == "parquet":
        frame = _read_parquet(raw, label).astype(object).where(lambda f: f.notna(), "")
        frame = frame.astype(str)
        frame.columns = [str(c).strip() for c in frame.columns]
    elif suffix in ("csv", "tsv", "txt", ""):  # unnamed bytes are read as delimited text
        frame = _sniff_table(raw, label, notes)
    else:
        raise DataError(f"{label}: unsupported file type .{suffix or '(none)'}; attributes must be .csv or .parquet")
    if _ids_column(frame) is not None:
        table = attribute_frame(frame, label)
        has_ids = True
    else:
        if frame.shape[1] == 1 and any(s in str(frame.columns[0]) for s in ",\t;| "):
            raise DataError(f"{label}: the header {str(frame.columns[0])!r} looks like one column: is the separator "
                            "a comma, tab, semicolon or |?")
        _refuse_position_columns(frame, label)
        frame.index = pd.RangeIndex(len(frame))
        table = attribute_frame(frame.assign(__row__=np.arange(len(frame))).rename(columns={"__row__": "user_id"}),
                                label)
        has_ids = False
    if table.shape[1] == 0:
        raise DataError(f"{label}: no attribute columns besides the user id")
    return AttributeFile(label, table, has_ids, tuple(notes))


def load_attributes(source: bytes | str | os.PathLike, name: str | None = None) -> pd.DataFrame:
    """An attributes table indexed by integer user id (row position when the file has no id column)."""
    return load_attribute_file(source, name).frame


# --------------------------------------------------------------------------------------------- alignment


def _ids_preview(ids) -> str:
    ids = list(ids)
    return ", ".join(map(str, ids[:5])) + (f" … ({len(ids):,} in all)" if len(ids) > 5 else "")


def _id_range(ids: np.ndarray) -> str:
    return f"{ids.min()}..{ids.max()}" if len(ids) else "none"


def _shift_hint(emb_ids: np.ndarray, attr_ids: np.ndarray) -> str:
    """When shifting one file's ids by ±1 would match far more users, say so: the classic 0- vs 1-based slip."""
    matched = len(np.intersect1d(emb_ids, attr_ids))
    for shift in (1, -1):
        if len(np.intersect1d(emb_ids + shift, attr_ids)) > matched + max(5, 0.1 * len(emb_ids)):
            return (f" The ids look shifted by one: the embeddings' ids {_id_range(emb_ids)} against the attributes' "
                    f"{_id_range(attr_ids)} (one file counts from 0, the other from 1?).")
    return ""


def _position_refusal(emb: EmbeddingFile, attr: AttributeFile) -> DataError:
    n, m = len(emb.table), len(attr.frame)
    fix_position = (f"or (b) if row i of {emb.label} is the user on row i of {attr.label}, choose 'match by position' "
                    f"on the page or pass --match-by-position on the command line"
                    if n == m else f"((b), matching by position, is impossible: {n:,} rows against {m:,})")
    if emb.ids is None:
        return DataError(
            f"{emb.label} has no user ids ({n:,} rows) but {attr.label} has a user-id column ({m:,} users, ids "
            f"{_id_range(attr.frame.index.to_numpy())}): which row is which user cannot be told from the files, and "
            f"a guess such as 'row i is user i' can shift every label by one row and hide a real leak. To fix it, "
            f"(a) add the users' ids to the embeddings: a user_id column (CSV, Parquet) or a 'user_ids' array "
            f"(.npz, .safetensors), {fix_position}.")
    return DataError(
        f"{emb.label} has user ids ({n:,} rows) but {attr.label} has no user-id column ({m:,} rows): which attribute "
        f"row belongs to which user cannot be told. To fix it, (a) add a user_id column to {attr.label}, "
        f"{fix_position}.")


def prepare_upload(
    embeddings: bytes | str | os.PathLike, attributes: bytes | str | os.PathLike,
    embeddings_name: str | None = None, attributes_name: str | None = None, match_by_position: bool = False,
) -> UploadedEmbeddings:
    """Load both files and check them against each other (shape, NaN/inf), then align attributes to rows: on user
    ids when both files carry them; by position when the attributes have no id column, or when the caller says so
    (`match_by_position`) for an embeddings file without ids; anything else is refused with a DataError."""
    emb = load_embeddings_file(embeddings, embeddings_name)
    table = emb.table
    if table.ndim != 2:
        raise DataError(f"{emb.label}: expected a 2-D table (users × dimensions), found shape {table.shape}")
    if table.shape[0] < MIN_USERS or table.shape[1] < 2:
        raise DataError(f"{emb.label}: {table.shape[0]} users × {table.shape[1]} dimensions is too small; an audit "
                        f"needs at least {MIN_USERS} users and 2 dimensions")
    finite = np.isfinite(table).all(1)
    if not finite.all():
        rows = np.flatnonzero(~finite)
        raise DataError(f"{emb.label}: {len(rows)} rows contain NaN or infinite values (first rows: "
                        f"{', '.join(str(r + 1) for r in rows[:5])}); remove or repair them before the audit")
    if np.abs(table).max() > np.finfo(np.float32).max:
        raise DataError(f"{emb.label}: values up to {np.abs(table).max():.3g} do not fit in 32-bit floats")
    attr = load_attribute_file(attributes, attributes_name)
    notes = [*emb.notes, *attr.notes]
    warnings: list[str] = []
    if emb.ids is not None and attr.has_ids:
        ids = emb.ids
        attr_ids = attr.frame.index.to_numpy(np.int64)
        missing = np.setdiff1d(ids, attr_ids)
        extra = np.setdiff1d(attr_ids, ids)
        matched = len(ids) - len(missing)
        hint = _shift_hint(ids, attr_ids)
        if matched < MIN_USERS:
            raise DataError(
                f"only {matched} user ids appear in both files: {len(missing)} ids of {emb.label} are not in "
                f"{attr.label} (e.g. {missing[:5].tolist()}) and {len(extra)} ids of {attr.label} are not in "
                f"{emb.label} (e.g. {extra[:5].tolist()}).{hint} Check that both files use the same user ids.")
        if hint:
            warnings.append(hint.strip())
        if match_by_position:
            notes.append("both files carry user ids, so rows were matched on ids ('match by position' applies only "
                         "to files without ids)")
        aligned = attr.frame.reindex(ids)
        matched_by = "id"
    else:
        if not match_by_position and not (emb.ids is None and not attr.has_ids):
            raise _position_refusal(emb, attr)
        if len(table) != len(attr.frame):
            raise DataError(
                f"cannot match by position: {emb.label} has {len(table):,} rows but {attr.label} has "
                f"{len(attr.frame):,}. Matching by position needs the same users in the same order in both files; "
                "add a user_id column to both files to match them on ids instead")
        ids = emb.ids if emb.ids is not None else attr.frame.index.to_numpy(np.int64)
        aligned = attr.frame.set_axis(ids)
        missing = extra = np.zeros(0, np.int64)
        matched, matched_by = len(ids), "position"
        notes.append(f"matched by position: row i of {emb.label} was given the attributes on row i of {attr.label} "
                     f"({len(ids):,} rows); {'neither file has' if emb.ids is None and not attr.has_ids else 'only one file has'} "
                     "user ids, so nothing checks that the order is the same")
    if len(missing):
        warnings.append(f"{len(missing):,} users of {emb.label} have no row in {attr.label} (ids "
                        f"{_ids_preview(missing)}); they are left out of the attacks")
    if len(extra):
        warnings.append(f"{len(extra):,} users of {attr.label} are not in {emb.label} (ids {_ids_preview(extra)}); "
                        "ignored")
    aligned.index = pd.RangeIndex(len(ids))
    return UploadedEmbeddings(
        table.astype(np.float32), np.asarray(ids, np.int64), aligned, tuple(warnings), tuple(notes), matched_by,
        int(matched), missing, extra, emb.dtype, emb.ids is not None or attr.has_ids)


# --------------------------------------------------------------------------------------------- writing

def embeddings_bytes(table: np.ndarray, user_ids: np.ndarray | None, fmt: str) -> bytes:
    """An (edited) embeddings table as the bytes of a file that `load_embeddings_file` reads back to the same
    numbers (float32) and ids: CSV or Parquet with a user_id column, .npz / .safetensors with a user_ids array,
    .npy without ids (row order only)."""
    fmt = fmt.lower().lstrip(".")
    table = np.ascontiguousarray(np.asarray(table, dtype=np.float32))
    ids = None if user_ids is None else np.asarray(user_ids, dtype=np.int64)
    buffer = io.BytesIO()
    if fmt == "npy":
        np.save(buffer, table, allow_pickle=False)
    elif fmt == "npz":
        np.savez(buffer, embeddings=table, **({} if ids is None else {"user_ids": ids}))
    elif fmt == "safetensors":
        from safetensors.numpy import save

        return save({"embeddings": table, **({} if ids is None else {"user_ids": ids})})
    elif fmt in ("csv", "parquet"):
        frame = pd.DataFrame(table, columns=[f"dim_{i}" for i in range(table.shape[1])])
        if ids is not None:
            frame.insert(0, "user_id", ids)
        if fmt == "csv":
            frame.to_csv(buffer, index=False, float_format="%.9g")  # 9 significant digits: float32 exactly
        else:
            frame.to_parquet(buffer, index=False)
    else:
        raise DataError(f"cannot write .{fmt} files; use {', '.join('.' + f for f in EMBEDDING_FORMATS)}")
    return buffer.getvalue()


def save_embeddings(path: str | os.PathLike, table: np.ndarray, user_ids: np.ndarray | None, like: str = ".csv"
                    ) -> Path:
    """Write an (edited) embeddings table in the format of `path` (or `like` when it has no suffix), user ids
    kept whenever the format can hold them; the result loads back through `load_embeddings` to the same numbers."""
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix("." + like.lower().lstrip("."))
    data = embeddings_bytes(table, user_ids, path.suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def attributes_bytes(attributes: pd.DataFrame, user_ids: np.ndarray | None) -> bytes:
    """An attributes table as CSV with a user_id column (when ids are given), readable by `load_attribute_file`."""
    frame = attributes.reset_index(drop=True)
    if user_ids is not None:
        frame.insert(0, "user_id", np.asarray(user_ids, np.int64))
    return frame.to_csv(index=False).encode()


def sample_pair(dim: int = 32, seed: int = 0) -> tuple[bytes, bytes]:
    """A sample upload from the built-in demo: user embeddings (CSV with user_id, rows shuffled so that only the
    ids can align them) from a truncated SVD of the demo's interactions, and its attributes table (CSV). The demo
    plants gender, age and occupation in users' tastes, so an audit of the pair finds leakage."""
    from .data import make_synthetic

    dataset = make_synthetic()
    matrix = np.zeros((dataset.n_users, dataset.n_items), np.float64)
    matrix[dataset.users, dataset.items] = 1.0
    u, s, _ = np.linalg.svd(matrix - matrix.mean(0), full_matrices=False)
    table = (u[:, :dim] * np.sqrt(s[:dim])).astype(np.float32)
    order = np.random.default_rng(seed).permutation(dataset.n_users)
    embeddings = embeddings_bytes(table[order], dataset.user_ids[order], "csv")
    return embeddings, attributes_bytes(dataset.attributes, dataset.user_ids)


def read_audit_report(source: bytes | str | os.PathLike, name: str | None = None) -> pd.DataFrame:
    """An audit report written by the Audit or Assess page or by `python -m core audit --report` (JSON: a list of
    audit results) read back as the table `AuditResult.to_frame` gives: one row per representation × attribute ×
    attacker with each metric's mean and interval, the p-value and the verdict, to the same numbers."""
    import json

    from .audit.verdict import METRICS

    raw, label = _read(source, name, "audit report")
    try:
        results = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{label}: not a JSON audit report ({error})") from error
    results = results if isinstance(results, list) else [results]
    rows = []
    try:
        for result in results:
            verdicts = {v["attribute"]: v for v in result["verdicts"]}
            for score in result["scores"]:
                row = {"representation": score["representation"], "attribute": score["attribute"],
                       "attacker": score["attacker"]}
                for metric in METRICS:
                    estimate = score["metrics"][metric]
                    row[metric], row[f"{metric} low"], row[f"{metric} high"] = (
                        estimate["mean"], estimate["low"], estimate["high"])
                row["|AUC − 0.5|"] = abs(row["AUC"] - 0.5)
                row["p-value"] = score["p_value"]
                verdict = verdicts[score["attribute"]]
                row["attribute verdict"] = ("leaks" if verdict["leaks"] else "inconclusive"
                                            if verdict["leakage"] > verdict["tolerance"] else "no leak")
                rows.append(row)
    except (KeyError, TypeError) as error:
        raise DataError(f"{label}: not an audit report written by this tool (missing {error})") from error
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- a model trained elsewhere


@dataclass(frozen=True)
class ExternalModel:
    """A recommender trained elsewhere, rebuilt as a dot-product scorer (score = ⟨user row, item row⟩, the BPR-MF
    scoring function) over its own interactions and split, so NDCG/HR before and after unlearning are measured as
    for the models trained here. Rows follow the interactions' user and item indices."""

    model: object  # core.models.BPRMF holding the uploaded tables
    dataset: object  # core.data.InteractionDataset (its attributes aligned when an attributes file was given)
    split: object  # core.data.Split: the file's own split column, else the seeded per-user split
    notes: tuple[str, ...] = ()


def _rows_for(ids_wanted: np.ndarray, read: EmbeddingFile, what: str, interactions_label: str) -> np.ndarray:
    """The table's rows in the order of `ids_wanted`; every id must be present (a missing row cannot be scored)."""
    if read.ids is None:
        raise DataError(f"{read.label}: a {what} table for a trained model needs its {what} ids (a {what}_id column, "
                        f"or a '{what}_ids' array in .npz/.safetensors) to be matched with {interactions_label}")
    position = pd.Series(np.arange(len(read.ids)), index=read.ids)
    found = position.reindex(ids_wanted)
    if found.isna().any():
        missing = ids_wanted[found.isna().to_numpy()]
        raise DataError(f"{len(missing):,} {what}s of {interactions_label} have no row in {read.label} (ids "
                        f"{_ids_preview(missing)}); the model cannot score them. Upload the tables the model was "
                        "trained with, or remove those interactions")
    return found.to_numpy(np.int64)


def prepare_external_model(
    users: bytes | str | os.PathLike, items: bytes | str | os.PathLike, interactions: bytes | str | os.PathLike,
    attributes: bytes | str | os.PathLike | None = None, users_name: str | None = None,
    items_name: str | None = None, interactions_name: str | None = None, attributes_name: str | None = None,
    seed: int = 0, device: str = "cpu",
) -> ExternalModel:
    """A user table and an item table (both with ids) and the interactions they were trained and tested on
    (user, item[, split]; no k-core filter, the model's own data as given) as a dot-product model."""
    import torch

    from .data import load_interactions_csv, split_per_user
    from .models import BPRMF

    user_file = load_embeddings_file(users, users_name, of="user")
    item_file = load_embeddings_file(items, items_name, of="item")
    for read in (user_file, item_file):
        if read.table.ndim != 2 or not np.isfinite(read.table).all():
            raise DataError(f"{read.label}: expected a finite 2-D table (rows × dimensions), found shape "
                            f"{read.table.shape}" + ("" if read.table.ndim != 2 else " with NaN or infinite values"))
    if user_file.table.shape[1] != item_file.table.shape[1]:
        raise DataError(f"{user_file.label} has {user_file.table.shape[1]} dimensions but {item_file.label} has "
                        f"{item_file.table.shape[1]}; a dot-product model needs the same number")
    label = interactions_name or ("interactions file" if isinstance(interactions, (bytes, bytearray))
                                  else Path(interactions).name)
    attribute_table = None
    notes: list[str] = []
    if attributes is not None:
        attr = load_attribute_file(attributes, attributes_name)
        if not attr.has_ids:
            raise DataError(f"{attr.label}: needs a user_id column to be matched with {label}")
        attribute_table, notes = attr.frame, list(attr.notes)
    dataset = load_interactions_csv(interactions, name=Path(label).stem, k=1, file_label=label)
    if attribute_table is not None:
        from .data import _align_attributes

        dataset = replace(dataset, attributes=_align_attributes(attribute_table, dataset.user_ids))
    user_rows = _rows_for(dataset.user_ids, user_file, "user", label)
    item_rows = _rows_for(dataset.item_ids, item_file, "item", label)
    extra = len(user_file.table) - len(user_rows)
    if extra:
        notes.append(f"{extra:,} users of {user_file.label} have no interactions in {label}; they are not scored")
    split = split_per_user(dataset, seed=seed)
    notes += [n for n in dataset.notes if "k-core" not in n]
    notes.append(f"split in use: {split.describe()}" + ("" if split.mode == "file" else
                 "; the file has no split column, so the test pairs may include pairs the model was trained on "
                 "(add a split column with train/test to measure it as it was tested)"))
    model = BPRMF(dataset.n_users, dataset.n_items, dim=user_file.table.shape[1])
    with torch.no_grad():
        model.user_emb.copy_(torch.as_tensor(user_file.table[user_rows], dtype=torch.float32))
        model.item_emb.copy_(torch.as_tensor(item_file.table[item_rows], dtype=torch.float32))
    return ExternalModel(model.to(device).eval(), dataset, split, tuple(notes))


def interactions_bytes(split) -> bytes:
    """A split's interactions as CSV (user, item, split = train/valid/test, raw ids): with the user and item tables
    it uploads back (`prepare_external_model`) to the same split and the same ranking metrics."""
    dataset = split.dataset
    parts = [(split.train, "train"), (split.valid, "valid"), (split.test, "test")]
    frame = pd.concat([pd.DataFrame({"user": dataset.user_ids[p[:, 0]], "item": dataset.item_ids[p[:, 1]],
                                     "split": name}) for p, name in parts], ignore_index=True)
    return frame.to_csv(index=False).encode()


def model_tables_bytes(model, dataset, fmt: str = "csv") -> tuple[bytes, bytes]:
    """A dot-product model's user and item tables with their raw ids (user_id / item_id), in `fmt`."""
    import torch

    with torch.no_grad():
        users = model.user_emb.detach().cpu().numpy()
        items = model.item_emb.detach().cpu().numpy()
    return embeddings_bytes(users, dataset.user_ids, fmt), _item_bytes(items, dataset.item_ids, fmt)


def _item_bytes(table: np.ndarray, item_ids: np.ndarray, fmt: str) -> bytes:
    """Like `embeddings_bytes`, with item ids (an item_id column or an item_ids array)."""
    fmt = fmt.lower().lstrip(".")
    table = np.ascontiguousarray(np.asarray(table, dtype=np.float32))
    ids = np.asarray(item_ids, dtype=np.int64)
    buffer = io.BytesIO()
    if fmt == "npz":
        np.savez(buffer, embeddings=table, item_ids=ids)
    elif fmt == "safetensors":
        from safetensors.numpy import save

        return save({"embeddings": table, "item_ids": ids})
    elif fmt in ("csv", "parquet"):
        frame = pd.DataFrame(table, columns=[f"dim_{i}" for i in range(table.shape[1])])
        frame.insert(0, "item_id", ids)
        if fmt == "csv":
            frame.to_csv(buffer, index=False, float_format="%.9g")
        else:
            frame.to_parquet(buffer, index=False)
    else:
        raise DataError(f"cannot write an item table as .{fmt}; use .csv, .parquet, .npz or .safetensors")
    return buffer.getvalue()
