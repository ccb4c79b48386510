"""Attribute typing: integer codes stay classes, numbers are binned with stated ranges, overrides win, rare classes
merge with a note, and columns an attack cannot use are refused with a message saying what to do."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.attributes import (
    ATTRIBUTE_TYPES, MAX_INTEGER_CATEGORIES, describe_attribute, effective_min_class_size, encode_typed,
    infer_attribute_type, parse_type_overrides,
)
from core.data import AttributeLabels, DataError, encode_attribute


def decoded(labels: AttributeLabels) -> list[str]:
    """Each labelled user's class name."""
    return [labels.classes[c] for c in labels.codes]


def test_types_are_the_four_of_the_spec():
    assert ATTRIBUTE_TYPES == ("binary", "categorical", "ordinal", "numeric")


def test_integer_codes_are_categories_not_bins():
    codes = np.repeat(np.arange(21), 30)  # occupation coded 0..20, 30 users each
    kind, reason = infer_attribute_type(pd.Series(codes))
    assert kind == "categorical"
    assert "integer codes with few distinct values are treated as categories" in reason and "numeric" in reason
    labels = encode_attribute(pd.Series(codes, name="occupation"), "occupation")
    assert labels.kind == "categorical" and labels.n_classes == 21
    assert labels.classes == tuple(str(i) for i in range(21))  # numeric order: "2" < "10"
    assert decoded(labels) == [str(c) for c in codes]


def test_ten_equal_codes_give_ten_classes():
    labels = encode_typed(pd.Series(np.tile(np.arange(10), 25), name="region"))
    assert labels.kind == "categorical" and labels.n_classes == 10
    assert set(labels.counts().values()) == {25}


def test_integer_codes_with_gaps_read_as_floats_keep_their_names():
    values = pd.Series([3.0, 10.0, np.nan, 2.0] * 30, name="code")
    labels = encode_typed(values)
    assert labels.kind == "categorical" and labels.classes == ("2", "3", "10")
    assert labels.mask.sum() == 90


def test_class_identity_is_preserved_for_a_non_monotone_code():
    """Codes 1 and 4 share a signal that no ordering of the codes captures: each code must stay its own class."""
    rng = np.random.default_rng(0)
    original = rng.integers(0, 6, 600)
    labels = encode_typed(pd.Series(original, name="code"))
    assert labels.n_classes == 6
    mapping = {}
    for raw, code in zip(original, labels.codes):
        assert mapping.setdefault(int(raw), int(code)) == int(code)
    assert len(set(mapping.values())) == 6  # 1:1
    assert all(labels.classes[code] == str(raw) for raw, code in mapping.items())
    # a label shared by codes 1 and 4 is exactly recoverable from the encoded classes
    shared = np.isin(original, [1, 4])
    assert np.array_equal(np.isin(labels.codes, [mapping[1], mapping[4]]), shared)


def test_many_floats_are_numeric_with_ranges_in_the_names():
    values = pd.Series(np.random.default_rng(1).normal(50, 10, 500).round(3), name="score")
    assert values.nunique() == 500
    kind, _ = infer_attribute_type(values)
    assert kind == "numeric"
    labels = encode_typed(values)
    assert labels.kind == "numeric" and labels.n_classes == 4
    assert sorted(labels.counts().values()) == [125, 125, 125, 125]
    decoded_names = decoded(labels)
    for name in labels.classes:  # "low-high", and the bin holds exactly the values in that range
        low, high = (float(x) for x in name.split("-"))
        inside = values.to_numpy()[[n == name for n in decoded_names]]
        assert inside.min() == pytest.approx(low, abs=1e-3) and inside.max() == pytest.approx(high, abs=1e-3)
    assert any("quantile bins" in note for note in labels.notes)


def test_many_whole_numbers_are_numeric():
    values = pd.Series(np.arange(100), name="age")
    kind, reason = infer_attribute_type(values)
    assert kind == "numeric" and "100 distinct" in reason
    assert pd.Series(np.arange(MAX_INTEGER_CATEGORIES)).pipe(infer_attribute_type)[0] == "categorical"
    assert pd.Series(np.arange(MAX_INTEGER_CATEGORIES + 1)).pipe(infer_attribute_type)[0] == "numeric"


def test_override_numeric_bins_integer_codes():
    codes = pd.Series(np.repeat(np.arange(20), 10), name="code")
    labels = encode_typed(codes, kind="numeric")
    assert labels.kind == "numeric" and labels.n_classes == 4
    assert labels.classes == ("0-4", "5-9", "10-14", "15-19")
    assert any("set by request" in note and "categorical" in note for note in labels.notes)
    assert encode_attribute(codes, "code", kind="numeric").classes == labels.classes


def test_ordinal_keeps_numeric_order():
    ages = pd.Series([1, 18, 25, 35, 45, 50, 56] * 30, name="age")  # MovieLens-1M's age codes
    labels = encode_typed(ages, kind="ordinal")
    assert labels.kind == "ordinal"
    assert labels.classes == ("1", "18", "25", "35", "45", "50", "56")
    assert decoded(labels) == [str(a) for a in ages]
    assert encode_typed(pd.Series([10, 2, 2, 10, 3] * 10), kind="ordinal").classes == ("2", "3", "10")
    assert encode_typed(pd.Series(["10", "2", "3"] * 10), kind="ordinal").classes == ("2", "3", "10")  # text too
    assert any("2 < 3 < 10" in note for note in encode_typed(pd.Series([10, 2, 3] * 10), kind="ordinal").notes)


def test_ordinal_rare_classes_join_a_neighbour():
    ages = pd.Series([18] * 100 + [25] * 100 + [35] * 3 + [45] * 100, name="age")
    labels = encode_typed(ages, kind="ordinal")
    assert labels.classes == ("18", "25 to 35", "45")  # 35 joins its smaller neighbour, the order is kept
    assert labels.counts() == {"18": 100, "25 to 35": 103, "45": 100}


def test_rare_classes_merge_into_other_with_a_note():
    values = pd.Series(["a"] * 100 + ["b"] * 100 + ["c"] * 5 + ["d"] * 3, name="job")
    labels = encode_typed(values)
    assert labels.classes == ("a", "b", "other") and labels.counts()["other"] == 8
    note = next(n for n in labels.notes if "merged" in n)
    assert "c (5)" in note and "d (3)" in note and "fewer than 10 users" in note  # 208 users: 5% is 10


def test_rare_classes_join_an_existing_other():
    values = pd.Series(["a"] * 100 + ["other"] * 50 + ["c"] * 5, name="job")
    labels = encode_typed(values)
    assert labels.classes == ("a", "other") and labels.counts() == {"a": 100, "other": 55}


def test_a_lone_rare_class_is_kept_and_noted():
    labels = encode_typed(pd.Series(["a"] * 100 + ["b"] * 100 + ["c"] * 5, name="job"))
    assert labels.classes == ("a", "b", "c")
    assert any("'c' has only 5 users" in note for note in labels.notes)


def test_small_tables_scale_the_rare_threshold_down():
    assert effective_min_class_size(20, 1000) == 20
    assert effective_min_class_size(20, 200) == 10
    assert effective_min_class_size(20, 30) == 2
    # 60 users in 3 classes of 20, 25, 15: nothing is merged away (threshold 3)
    labels = encode_typed(pd.Series(["a"] * 20 + ["b"] * 25 + ["c"] * 15, name="g"))
    assert labels.n_classes == 3


def test_all_rare_classes_are_refused():
    values = pd.Series([f"c{i}" for i in range(40) for _ in range(15)], name="zip")  # 600 users, 40 × 15
    with pytest.raises(DataError, match="single class"):
        encode_typed(values)


def test_too_many_classes_are_refused():
    values = pd.Series([f"c{i:02d}" for i in range(60) for _ in range(25)], name="city")
    with pytest.raises(DataError) as error:
        encode_typed(values)
    message = str(error.value)
    assert "60" in message and "50" in message and "bin it, group rare values, or choose numeric" in message


def test_single_class_is_refused():
    with pytest.raises(DataError, match="has a single class"):
        encode_typed(pd.Series(["M"] * 40, name="gender"))
    with pytest.raises(DataError, match="has a single class"):
        encode_typed(pd.Series([np.nan] * 10, name="empty"))


def test_missing_values_are_excluded_by_the_mask():
    values = pd.Series(["F", None, "M", "F", np.nan] * 20, name="gender")
    labels = encode_typed(values)
    assert labels.kind == "binary" and labels.classes == ("F", "M")
    assert labels.mask.tolist() == [True, False, True, True, False] * 20
    assert len(labels.codes) == 60 and labels.counts() == {"F": 40, "M": 20}
    assert any("40 users without a value" in note for note in labels.notes)


def test_binary_and_bad_overrides():
    assert encode_typed(pd.Series([0, 1, 1, 0] * 10)).kind == "binary"
    assert encode_typed(pd.Series([True, False] * 10)).classes == ("False", "True")
    with pytest.raises(DataError, match="set to binary but has 3 values"):
        encode_typed(pd.Series(["a", "b", "c"] * 10, name="g"), kind="binary")
    with pytest.raises(DataError, match="not finite numbers"):
        encode_typed(pd.Series(["a", "b", "c"] * 10, name="g"), kind="numeric")
    with pytest.raises(DataError, match="unknown type"):
        encode_typed(pd.Series(["a", "b"] * 10), kind="nominal")  # type: ignore[arg-type]


def test_parse_type_overrides():
    assert parse_type_overrides(None) == {}
    assert parse_type_overrides(["occupation=categorical", " age = Ordinal "]) == {
        "occupation": "categorical", "age": "ordinal",
    }
    assert parse_type_overrides(["a=numeric,b=binary"]) == {"a": "numeric", "b": "binary"}
    with pytest.raises(DataError, match="expected NAME=TYPE"):
        parse_type_overrides(["occupation"])
    with pytest.raises(DataError, match="expected NAME=TYPE"):
        parse_type_overrides(["=numeric"])
    with pytest.raises(DataError, match="unknown type 'nominal'.*binary, categorical, ordinal, numeric"):
        parse_type_overrides(["occupation=nominal"])
    with pytest.raises(DataError, match="two types"):
        parse_type_overrides(["age=numeric", "age=ordinal"])


def test_describe_attribute():
    labels = encode_typed(pd.Series(["a"] * 30 + ["b"] * 20 + ["c"] * 25, name="job"))
    described = describe_attribute(labels)
    assert described["name"] == "job" and described["kind"] == "categorical" and described["n_classes"] == 3
    assert described["counts"] == {"a": 30, "b": 20, "c": 25} and described["n_labelled"] == 75
    assert described["notes"] and described["notes"][0].startswith("categorical: text values")


def test_old_constructor_calls_still_work():
    labels = AttributeLabels("g", np.array([0, 1]), ("a", "b"), np.array([True, True]))
    assert labels.kind == "categorical" and labels.notes == () and labels.n_classes == 2


def test_movielens_100k_attributes(ml100k):
    encoded = {c: encode_attribute(ml100k.attributes[c], c) for c in ("gender", "age", "occupation")}
    assert encoded["gender"].kind == "binary" and encoded["gender"].counts() == {"F": 273, "M": 670}
    age = encoded["age"]
    assert age.kind == "numeric" and age.classes == ("7-25", "26-31", "32-43", "44-73")
    occupation = encoded["occupation"]
    assert occupation.kind == "categorical" and occupation.n_classes == 13
    assert "doctor" not in occupation.classes and occupation.counts()["other"] == 200
    assert min(occupation.counts().values()) >= 20
