"""Property-based tests (hypothesis) over the upload loaders: random shapes, dtypes, NaN/inf, duplicate and
missing ids, empty and truncated files, wrong delimiters, pickled objects, forged headers, random bytes. Every case
ends either in the exact table that was written or in a DataError; none in a traceback, none silently misread.
The number of cases each property ran is printed at the end of the session (`-rA` or `-s` shows it)."""
import io
import pickle
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from core.data import DataError
from core.uploads import (
    EMBEDDING_FORMATS, embeddings_bytes, load_attribute_file, load_embeddings_file, prepare_upload,
)

CASES: Counter = Counter()
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True,
                    database=None)  # seeded (derandomize) and nothing written into the working tree


@pytest.fixture(scope="module", autouse=True)
def report_cases():
    yield
    print(f"\nupload properties: {sum(CASES.values())} cases, " + ", ".join(f"{k} {v}" for k, v in sorted(CASES.items())))


def refused_or(read, expected=None):
    """Call `read`; a DataError is a refusal (counted), any other exception fails the test."""
    try:
        return read()
    except DataError as error:
        assert str(error), "a refusal must say why"
        return None


tables = st.tuples(st.integers(1, 40), st.integers(1, 12), st.sampled_from(["float32", "float64", "int32", "int64",
                                                                            "float16", "uint8"]), st.integers(0, 2**31))


def make_table(shape):
    rows, cols, dtype, seed = shape
    values = np.random.default_rng(seed).normal(0, 50, (rows, cols))
    return values.astype(dtype)


@SETTINGS
@given(shape=tables, fmt=st.sampled_from(EMBEDDING_FORMATS), with_ids=st.booleans())
def test_any_written_table_reads_back_exactly(shape, fmt, with_ids):
    CASES["round trip"] += 1
    table = make_table(shape)
    ids = np.random.default_rng(shape[3]).permutation(10 * len(table))[: len(table)] if with_ids else None
    read = load_embeddings_file(embeddings_bytes(table, ids, fmt), f"t.{fmt}")
    assert np.array_equal(read.table.astype(np.float32), table.astype(np.float32))  # the audit's float32, exactly
    if with_ids and fmt != "npy":
        assert np.array_equal(read.ids, ids)
    else:
        assert read.ids is None


@SETTINGS
@given(shape=tables, fmt=st.sampled_from(EMBEDDING_FORMATS), cut=st.floats(0.0, 1.0))
def test_truncated_files_are_refused_or_read_as_an_exact_prefix(shape, fmt, cut):
    CASES["truncated"] += 1
    table = make_table(shape).astype(np.float32)
    data = embeddings_bytes(table, np.arange(len(table)), fmt)
    cut_at = int(len(data) * cut)
    assume(cut_at < len(data))
    read = refused_or(lambda: load_embeddings_file(data[:cut_at], f"t.{fmt}"))
    if read is not None:  # only a CSV cut at a line end (or inside its last number) still reads as a table
        assert fmt == "csv"
        n = len(read.table)
        assert 0 < n <= len(table) and np.array_equal(read.ids, np.arange(n))
        if any("does not end with a line break" in note for note in read.notes):
            # cut inside the last row's last number: that row may be wrong, and the reader says so
            assert np.array_equal(read.table[:-1].astype(np.float32), table[: n - 1])
        else:  # cut exactly at a line end: the first rows, exactly
            assert n < len(table) and np.array_equal(read.table.astype(np.float32), table[:n])


@SETTINGS
@given(data=st.binary(max_size=400), fmt=st.sampled_from(EMBEDDING_FORMATS + ("txt", "json")))
def test_random_bytes_never_end_in_a_traceback(data, fmt):
    CASES["random bytes"] += 1
    refused_or(lambda: load_embeddings_file(data, f"r.{fmt}"))
    refused_or(lambda: load_attribute_file(data, "r.csv"))


@SETTINGS
@given(shape=tables, rows=st.lists(st.integers(0, 39), min_size=1, max_size=5),
       value=st.sampled_from([np.nan, np.inf, -np.inf]), fmt=st.sampled_from(EMBEDDING_FORMATS))
def test_nan_and_inf_are_refused_with_their_rows(shape, rows, value, fmt):
    CASES["NaN/inf"] += 1
    table = make_table((max(shape[0], 20), max(shape[1], 2), "float32", shape[3]))
    rows = sorted({r % len(table) for r in rows})
    table[rows, 0] = value
    ids = np.arange(len(table))
    attributes = pd.DataFrame({"user_id": ids, "g": ids % 2}).to_csv(index=False).encode()
    with pytest.raises(DataError, match=rf"{len(rows)} rows contain NaN or infinite values \(first rows: "
                                        rf"{', '.join(str(r + 1) for r in rows)}\)"):
        prepare_upload(embeddings_bytes(table, ids, fmt), attributes, f"e.{fmt}", "a.csv", match_by_position=True)


@SETTINGS
@given(n=st.integers(20, 60), duplicate=st.integers(0, 59), fmt=st.sampled_from(["csv", "parquet", "npz",
                                                                                  "safetensors"]))
def test_duplicate_ids_are_refused(n, duplicate, fmt):
    CASES["duplicate ids"] += 1
    ids = np.arange(n)
    ids[-1] = duplicate % (n - 1)
    with pytest.raises(DataError, match=rf"user id {ids[-1]} appears more than once"):
        load_embeddings_file(embeddings_bytes(np.ones((n, 3)), ids, fmt), f"e.{fmt}")


@SETTINGS
@given(n=st.integers(20, 80), drop=st.sets(st.integers(0, 79), max_size=20), shift=st.integers(-3, 3),
       order=st.integers(0, 2**31))
def test_missing_ids_are_counted_and_every_matched_row_keeps_its_label(n, drop, shift, order):
    CASES["missing ids"] += 1
    ids = np.arange(100, 100 + n)
    labels = np.array(["a", "b", "c"])[ids % 3]
    kept = np.array([i for i in range(n) if i not in drop])
    attributes = pd.DataFrame({"user_id": ids[kept] + shift, "g": labels[kept]}).sample(frac=1, random_state=order % 1000)
    table = np.random.default_rng(order).normal(size=(n, 4)).astype(np.float32)
    upload = refused_or(lambda: prepare_upload(embeddings_bytes(table, ids, "csv"),
                                               attributes.to_csv(index=False).encode(), "e.csv", "a.csv"))
    matched = np.isin(ids, ids[kept] + shift)
    if upload is None:
        assert matched.sum() < 20  # refused only when too few users match
        return
    assert upload.n_matched == matched.sum() and len(upload.unmatched_embeddings) == (~matched).sum()
    truth = pd.Series(labels[kept], index=ids[kept] + shift).reindex(ids)
    assert upload.attributes["g"].tolist() == truth.tolist()  # by id, never by position


@SETTINGS
@given(n=st.integers(20, 60), sep=st.sampled_from([",", ";", "\t", "|", " "]), header=st.booleans())
def test_delimiters_are_read_right_or_refused(n, sep, header):
    CASES["delimiters"] += 1
    table = np.round(np.random.default_rng(n).normal(size=(n, 3)), 4)
    lines = ([sep.join(["user_id", "d0", "d1", "d2"])] if header else []) + [
        sep.join([str(i)] + [repr(float(v)) for v in row]) for i, row in enumerate(table)]
    read = refused_or(lambda: load_embeddings_file("\n".join(lines).encode(), "e.csv"))
    if read is not None:
        if read.ids is not None:
            assert np.array_equal(read.ids, np.arange(n)) and np.allclose(read.table, table)
        else:  # no header: the id column is a dimension, and it says so by having four
            assert read.table.shape == (n, 4) and np.allclose(read.table[:, 1:], table)
    attributes = ("\n".join([sep.join(["user_id", "g"])] + [sep.join([str(i), "MF"[i % 2]]) for i in range(n)])).encode()
    read_attributes = refused_or(lambda: load_attribute_file(attributes, "a.csv"))
    if read_attributes is not None:
        assert read_attributes.has_ids and read_attributes.frame["g"].tolist() == ["MF"[i % 2] for i in range(n)]


@SETTINGS
@given(obj=st.sampled_from([{"x": 1}, [1, 2], "text", None, (1.0,)]), fmt=st.sampled_from(["npy", "npz", "pickle"]))
def test_pickled_objects_are_refused(obj, fmt):
    CASES["pickled"] += 1
    buffer = io.BytesIO()
    if fmt == "npy":
        np.save(buffer, np.array([obj], dtype=object), allow_pickle=True)
    elif fmt == "npz":
        np.savez(buffer, embeddings=np.array([obj], dtype=object), user_ids=np.arange(1))
    else:
        buffer.write(pickle.dumps(obj))
    with pytest.raises(DataError):
        load_embeddings_file(buffer.getvalue(), f"evil.{'npy' if fmt == 'pickle' else fmt}")


@SETTINGS
@given(rows=st.integers(1, 10**12), cols=st.integers(1, 10**6), extra=st.integers(0, 256))
def test_forged_npy_headers_are_refused_before_allocating(rows, cols, extra):
    CASES["forged headers"] += 1
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": (rows, cols)})
    data = buffer.getvalue() + b"\0" * extra
    assume(rows * cols * 4 != extra)
    with pytest.raises(DataError, match="the file is truncated or corrupt"):
        load_embeddings_file(data, "forged.npy")


def test_empty_and_header_only_files_are_refused():
    for fmt in EMBEDDING_FORMATS:
        with pytest.raises(DataError, match="the file is empty"):
            load_embeddings_file(b"", f"e.{fmt}")
    with pytest.raises(DataError):
        load_embeddings_file(b"user_id,d0,d1\n", "e.csv")
    with pytest.raises(DataError, match="header but no rows"):
        load_attribute_file(b"user_id,gender\n", "a.csv")
