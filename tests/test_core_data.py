"""Datasets: loaders, validation messages, k-core, the seeded split, and the synthetic demo (SPEC section 1)."""
import numpy as np
import pandas as pd
import pytest

from core.data import (
    DataError, encode_attribute, from_interactions, kcore, load_dataset, load_interactions_csv,
    load_movielens_1m, make_synthetic, split_per_user,
)


def test_demo_is_deterministic_and_the_promised_size():
    first = make_synthetic()
    second = make_synthetic()
    assert first.fingerprint == second.fingerprint
    assert np.array_equal(first.users, second.users) and first.attributes.equals(second.attributes)
    assert make_synthetic(seed=8).fingerprint != first.fingerprint
    assert 900 <= first.n_users <= 1000 and 1000 <= first.n_items <= 1500
    assert set(first.attributes.columns) == {"gender", "age", "occupation"}


def test_the_shipped_demo_files_are_the_generated_demo():
    """data/ holds the demo written out as an upload: read back, it must be the same users, items and attributes."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "data"
    generated = make_synthetic()
    read = load_interactions_csv(folder / "demo_interactions.csv", folder / "demo_attributes.csv")
    assert np.array_equal(read.user_ids[read.users], generated.user_ids[generated.users])
    assert np.array_equal(read.item_ids[read.items], generated.item_ids[generated.items])
    for column in ("gender", "age", "occupation"):
        assert list(read.attributes[column].astype(str)) == list(generated.attributes[column].astype(str))


def test_kcore_repeats_until_stable():
    # user 10 has 5 interactions, but one is on item 99, which only user 10 rated: dropping item 99 leaves
    # user 10 with 4, so a second pass must drop user 10 as well
    rows = [(u, i) for u in range(1, 6) for i in range(1, 6)]  # 5 users × 5 items, all 5-core
    rows += [(10, 1), (10, 2), (10, 3), (10, 4), (10, 99)]
    users, items = np.array(rows).T
    core = kcore(from_interactions("t", users, items), k=5)
    assert set(core.user_ids) == {1, 2, 3, 4, 5}
    assert 99 not in set(core.item_ids)
    counts = np.bincount(core.users)
    assert counts.min() >= 5 and np.bincount(core.items).min() >= 5


def test_split_is_per_user_disjoint_complete_and_seeded(demo):
    split = split_per_user(demo, seed=0)
    parts = [split.train, split.valid, split.test]
    keys = [set(map(tuple, p)) for p in parts]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    assert sum(len(p) for p in parts) == demo.n_interactions
    assert len(split.test) / demo.n_interactions == pytest.approx(0.1, abs=0.02)
    assert set(split.test[:, 0]) == set(range(demo.n_users))  # every (5-core) user has a test item
    assert np.array_equal(split_per_user(demo, seed=0).test, split.test)
    assert not np.array_equal(split_per_user(demo, seed=1).test, split.test)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def interactions_text(sep=","):
    rows = [f"{u}{sep}{i}{sep}{(u + i) % 5 + 1}" for u in range(1, 8) for i in range(1, 8)]
    return f"user{sep}item{sep}rating\n" + "\n".join(rows) + "\n"


def test_csv_with_attributes_and_threshold(tmp_path):
    data = write(tmp_path, "inter.tsv", interactions_text("\t"))
    attrs = write(tmp_path, "attrs.csv", "user_id,gender,age\n" + "\n".join(f"{u},{'MF'[u % 2]},{20 + u}" for u in range(1, 8)))
    dataset = load_interactions_csv(data, attrs)
    assert (dataset.n_users, dataset.n_items, dataset.n_interactions) == (7, 7, 49)
    assert list(dataset.attributes["gender"]) == ["MF"[u % 2] for u in range(1, 8)]
    thresholded = load_interactions_csv(data, rating_threshold=3, k=1)
    assert thresholded.n_interactions == sum((u + i) % 5 + 1 >= 3 for u in range(1, 8) for i in range(1, 8))


@pytest.mark.parametrize(
    "text, message",
    [
        ("user item\n1 2\n", "is the separator a comma, tab, semicolon or |?"),
        ("user,thing\n1,2\n", "missing the item column"),
        ("user,item\n1,2\n1,x7\n", "inter.csv line 3: item 'x7' is not an integer id"),
        ("user,item,rating\n1,2,good\n", "inter.csv line 2: rating 'good' is not a number"),
        ("", "inter.csv: the file is empty"),
        ("user,item\n", "has a header but no rows"),
    ],
)
def test_bad_interaction_files_are_explained(tmp_path, text, message):
    with pytest.raises(DataError, match=None) as error:
        load_interactions_csv(write(tmp_path, "inter.csv", text))
    assert message in str(error.value)


def test_bad_attribute_file_is_explained(tmp_path):
    data = write(tmp_path, "inter.csv", interactions_text())
    attrs = write(tmp_path, "attrs.csv", "user_id,gender\n1,M\n1,F\n")
    with pytest.raises(DataError, match="attrs.csv line 3: user 1 appears twice"):
        load_interactions_csv(data, attrs)


def test_single_class_attribute_is_refused():
    with pytest.raises(DataError, match="single class"):
        encode_attribute(pd.Series(["M", "M", None, "M"], name="gender"))


def test_attribute_encoding_bins_numbers_and_keeps_categories():
    age = encode_attribute(pd.Series(np.arange(100), name="age"), n_bins=4)
    assert age.n_classes == 4 and sorted(age.counts().values()) == [25, 25, 25, 25]
    gender = encode_attribute(pd.Series(["F", None, "M", "F"], name="gender"))
    assert gender.classes == ("F", "M") and gender.codes.tolist() == [0, 1, 0]
    assert gender.mask.tolist() == [True, False, True, True]


def test_movielens_1m_format(tmp_path):
    ratings = "\n".join(f"{u}::{i}::{(u * i) % 5 + 1}::97830{u}" for u in range(1, 7) for i in range(1, 7))
    write(tmp_path, "ratings.dat", ratings + "\n")
    write(tmp_path, "users.dat", "\n".join(f"{u}::{'MF'[u % 2]}::{[1, 18, 25, 35, 45, 56][u - 1]}::{u}::0000" for u in range(1, 7)))
    dataset = load_movielens_1m(tmp_path)
    assert (dataset.n_users, dataset.n_items, dataset.n_interactions) == (6, 6, 36)
    assert list(dataset.attributes["age"]) == ["<18", "18-24", "25-34", "35-44", "45-49", "56+"]
    write(tmp_path, "ratings.dat", "1,2,3,4\n")
    with pytest.raises(DataError, match=r"ratings.dat line 1: expected 4 fields separated by '::', found 1 \(is the separator right\?\)"):
        load_movielens_1m(tmp_path)


def test_movielens_100k_loader(ml100k):
    assert (ml100k.n_users, ml100k.n_items) == (943, 1349)  # 5-core of the 943 × 1682 original
    assert ml100k.n_interactions == 99287
    assert set(ml100k.attributes["gender"]) == {"M", "F"}
    assert ml100k.attributes["age"].between(7, 73).all()


def test_load_dataset_spec_errors():
    with pytest.raises(DataError, match="unknown data source"):
        load_dataset("parquet:x")
