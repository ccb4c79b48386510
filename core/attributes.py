"""Attribute typing: what kind of column an attribute is, and how it becomes class labels for the audit.

An attack needs classes. How a column becomes classes depends on what it *means*, and the file cannot always say:
public datasets code occupation as 0..20 and age as 1, 18, 25, ...; those numbers are codes, not magnitudes, and
cutting them into quantile bins would merge unrelated groups. So each column gets a type (SPEC section 1):

- ``binary``: exactly two values.
- ``categorical``: each distinct value is a class (text, true/false, and whole numbers with few distinct values).
- ``ordinal``: classes with an order (recorded, shown, and used when merging rare classes; attacks treat them as
  plain classes).
- ``numeric``: a measurement, cut into quantile bins whose names state the range of values they hold.

The type is inferred with a reason a privacy officer can read, and can always be overridden (``kind=``, or
``--attribute-type NAME=TYPE`` on the command line). Rare classes are merged, and columns that cannot support an
attack (one class, or too many classes) are refused with a message saying what to do.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, get_args

import numpy as np
import pandas as pd

from .data import AttributeLabels, DataError

AttributeType = Literal["binary", "categorical", "ordinal", "numeric"]
ATTRIBUTE_TYPES: tuple[AttributeType, ...] = get_args(AttributeType)

MAX_INTEGER_CATEGORIES = 30  # whole numbers with at most this many distinct values are read as codes
OTHER = "other"  # the class that rare categories merge into


# --------------------------------------------------------------------------------------------- inference


def _present(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """The non-missing values and the mask of users that have one."""
    mask = values.notna().to_numpy()
    return values[mask], mask


def _is_bool(present: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(present.dtype):
        return True
    return pd.api.types.is_object_dtype(present.dtype) and len(present) > 0 and all(
        isinstance(v, (bool, np.bool_)) for v in present
    )


def _is_number_dtype(present: pd.Series) -> bool:
    """A numeric column (booleans are not numbers here)."""
    return pd.api.types.is_numeric_dtype(present.dtype) and not _is_bool(present)


def _whole(numbers: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(numbers)) and np.all(numbers == np.round(numbers)))


def _preview(values: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def infer_attribute_type(values: pd.Series) -> tuple[AttributeType, str]:
    """The type a column most likely has, and one sentence saying why (shown beside the audit's results).

    Rules, in order: two distinct values -> binary; text, true/false or a declared categorical column ->
    categorical (ordinal when the categories are declared ordered); whole numbers with at most
    MAX_INTEGER_CATEGORIES distinct values -> categorical (they are usually codes); other numbers -> numeric.
    """
    present, _ = _present(values)
    distinct = present.unique()
    n_distinct = len(distinct)
    if n_distinct == 0:
        return "categorical", "no user has a value."
    if n_distinct == 1:
        return "categorical", f"every user has the same value ({_format_value(distinct[0])})."
    if n_distinct == 2:
        names = _preview([_format_value(v) for v in _sorted_distinct(present)])
        return "binary", f"it has exactly two values ({names}), so it is binary."
    if isinstance(present.dtype, pd.CategoricalDtype):
        if present.dtype.ordered:
            return "ordinal", "the table declares it as ordered categories, so the classes keep that order."
        return "categorical", "the table declares it as categories; each value is its own class."
    if _is_bool(present):
        return "categorical", "true/false values; each value is its own class."
    if not _is_number_dtype(present):
        return "categorical", f"text values ({n_distinct} distinct); each distinct value is its own class."
    numbers = present.to_numpy(dtype=float)
    if _whole(numbers) and n_distinct <= MAX_INTEGER_CATEGORIES:
        return "categorical", (
            f"{n_distinct} distinct whole numbers: integer codes with few distinct values are treated as "
            "categories; say numeric if they are magnitudes."
        )
    what = "whole numbers" if _whole(numbers) else "numbers"
    return "numeric", (
        f"{what} with {n_distinct} distinct values are treated as a measurement and cut into quantile bins; "
        "say categorical if they are codes."
    )


# --------------------------------------------------------------------------------------------- class order


def _format_value(value: object) -> str:
    """A class name for one raw value: whole floats lose their '.0' (a column with gaps is read as floats)."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return str(int(number)) if np.isfinite(number) and number == round(number) else repr(number)
    return str(value).strip()


def _number_or_none(value: object) -> float | None:
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _sorted_distinct(present: pd.Series) -> list:
    """Distinct values in class order: a declared categorical order first, else by number when every value is
    a number (so 2 < 10, also for text such as '2' and '10'), else alphabetically."""
    if isinstance(present.dtype, pd.CategoricalDtype):
        observed = set(present.unique())
        return [c for c in present.dtype.categories if c in observed]
    distinct = list(present.unique())
    numbers = [_number_or_none(v) for v in distinct]
    if all(n is not None for n in numbers):
        return [v for _, _, v in sorted(zip(numbers, [_format_value(v) for v in distinct], distinct))]
    return sorted(distinct, key=_format_value)


# --------------------------------------------------------------------------------------------- rare classes


def effective_min_class_size(min_class_size: int, n_labelled: int) -> int:
    """The size below which a class counts as rare: `min_class_size`, but at most 5% of the labelled users and
    never below 2, so that a small table is not merged away (100 users: 5; 400 or more users: 20)."""
    return int(min(min_class_size, max(2, n_labelled // 20)))


def _merge_into_other(
    codes: np.ndarray, names: list[str], threshold: int, attribute: str
) -> tuple[np.ndarray, list[str], list[str]]:
    """Unordered classes: those with fewer than `threshold` users merge into one class 'other' (joining an
    existing 'other' class if there is one). A lone rare class with no 'other' to join is kept: renaming it
    would change nothing. Refused when the merge would leave a single class."""
    counts = np.bincount(codes, minlength=len(names))
    rare = [i for i in range(len(names)) if counts[i] < threshold and names[i] != OTHER]
    has_other = OTHER in names
    if not rare or (len(rare) == 1 and not has_other):
        notes = [f"class {names[i]!r} has only {counts[i]} users (fewer than {threshold}); kept, as there is "
                 "nothing to merge it with." for i in rare]
        return codes, names, notes
    keep = [i for i in range(len(names)) if i not in rare and names[i] != OTHER]
    new_names = [names[i] for i in keep] + [OTHER]
    remap = np.full(len(names), len(new_names) - 1, dtype=np.int64)
    for new, old in enumerate(keep):
        remap[old] = new
    merged = remap[codes]
    if len(new_names) < 2:
        raise DataError(
            f"attribute {attribute!r} has a single class ({OTHER!r}) after merging rare classes: every class has "
            f"fewer than {threshold} users; group its values into larger classes, or choose numeric if they are "
            "magnitudes"
        )
    listed = _preview([f"{names[i]} ({counts[i]})" for i in sorted(rare, key=lambda i: (counts[i], names[i]))], 8)
    joined = "the existing 'other' class" if has_other else "a class 'other'"
    note = (f"{len(rare)} classes with fewer than {threshold} users were merged into {joined} "
            f"({int(np.sum(merged == len(new_names) - 1))} users): {listed}.")
    return merged, new_names, [note]


def _merge_neighbours(
    codes: np.ndarray, names: list[str], threshold: int, name_of: Callable[[list[int]], str]
) -> tuple[np.ndarray, list[str], list[str]]:
    """Ordered classes (ordinal, numeric bins): the smallest rare class repeatedly joins its smaller neighbour,
    so classes stay contiguous in the order; stops at two classes. `name_of` names a run of original classes."""
    counts = np.bincount(codes, minlength=len(names)).tolist()
    groups = [[i] for i in range(len(names))]
    sizes = list(counts)
    while len(groups) > 2:
        rare = [g for g in range(len(groups)) if sizes[g] < threshold]
        if not rare:
            break
        g = min(rare, key=lambda k: (sizes[k], k))
        neighbours = [k for k in (g - 1, g + 1) if 0 <= k < len(groups)]
        h = min(neighbours, key=lambda k: (sizes[k], k))
        lo, hi = min(g, h), max(g, h)
        groups[lo:hi + 1] = [groups[lo] + groups[hi]]
        sizes[lo:hi + 1] = [sizes[lo] + sizes[hi]]
    if len(groups) == len(names):
        return codes, names, []
    remap = np.empty(len(names), dtype=np.int64)
    for new, members in enumerate(groups):
        remap[members] = new
    new_names = [name_of(members) for members in groups]
    merged_runs = [f"{' + '.join(names[i] for i in members)} -> {new_names[k]} ({sizes[k]})"
                   for k, members in enumerate(groups) if len(members) > 1]
    note = (f"classes with fewer than {threshold} users were merged with their neighbours in the order: "
            f"{'; '.join(merged_runs)}.")
    return remap[codes], new_names, [note]


# --------------------------------------------------------------------------------------------- encoding


def _range_name(low: float, high: float) -> str:
    """A numeric bin's name stating the values it holds, e.g. '18-25' (' to ' when a bound is negative)."""
    if low == high:
        return f"{low:g}"
    return f"{low:g}-{high:g}" if low >= 0 else f"{low:g} to {high:g}"


def _numbers_for(present: pd.Series, name: str) -> np.ndarray:
    """The values as finite floats, or a DataError naming the values that are not numbers."""
    if _is_bool(present):
        raise DataError(f"attribute {name!r} holds true/false values, which cannot be numeric; choose binary")
    numbers = pd.to_numeric(present, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(numbers)
    if bad.any():
        examples = _preview(sorted({_format_value(v) for v in present[bad]}), 3)
        raise DataError(f"attribute {name!r} was set to numeric but has values that are not finite numbers "
                        f"({examples}); choose categorical, or fix those values")
    return numbers


def _encode_numeric(present: pd.Series, name: str, n_bins: int, threshold: int) -> tuple[np.ndarray, list[str], list[str]]:
    """Quantile bins named by the smallest and largest value they hold; rare bins join a neighbour."""
    if n_bins < 2:
        raise DataError(f"attribute {name!r}: numeric attributes need at least 2 bins, not {n_bins}")
    numbers = _numbers_for(present, name)
    binned = pd.qcut(pd.Series(numbers), q=n_bins, duplicates="drop")
    raw_codes = binned.cat.codes.to_numpy(dtype=np.int64)
    n_made = len(binned.cat.categories)
    present_bins = np.unique(raw_codes)  # qcut can leave a bin empty when values tie
    bin_codes = np.searchsorted(present_bins, raw_codes).astype(np.int64)

    def name_of(members: list[int]) -> str:
        inside = numbers[np.isin(bin_codes, members)]
        return _range_name(float(inside.min()), float(inside.max()))

    names = [name_of([k]) for k in range(len(present_bins))]
    notes: list[str] = []
    if len(present_bins) < n_bins:
        notes.append(f"asked for {n_bins} quantile bins; tied values left {len(present_bins)}"
                     + (f" (of {n_made} made)" if n_made != len(present_bins) else "") + ".")
    codes, names, merge_notes = _merge_neighbours(bin_codes, names, threshold, name_of)
    counts = np.bincount(codes, minlength=len(names))
    bins = ", ".join(f"{n} ({c})" for n, c in zip(names, counts))
    notes.insert(0, f"cut into {len(names)} quantile bins by value, each named by the range it holds: {bins}.")
    return codes, names, notes + merge_notes


def _encode_classes(
    present: pd.Series, name: str, kind: AttributeType, threshold: int
) -> tuple[np.ndarray, list[str], list[str]]:
    """Binary, categorical and ordinal: one class per distinct value in class order, then rare-class merging."""
    ordered = _sorted_distinct(present)
    names = [_format_value(v) for v in ordered]
    if len(set(names)) < len(names):  # e.g. 1 and 1.0 in an object column: one class each name
        unique_names = list(dict.fromkeys(names))
        lookup_name = {n: i for i, n in enumerate(unique_names)}
        codes = np.array([lookup_name[_format_value(v)] for v in present], dtype=np.int64)
        names = unique_names
    else:
        lookup = {v: i for i, v in enumerate(ordered)}
        codes = present.map(lookup).to_numpy(dtype=np.int64)
    notes: list[str] = []
    if kind == "binary":
        if len(names) > 2:
            raise DataError(f"attribute {name!r} was set to binary but has {len(names)} values "
                            f"({_preview(names)}); choose categorical")
        return codes, names, notes
    if kind == "ordinal":
        notes.append("classes in order: " + " < ".join(names[:12]) + (" < ..." if len(names) > 12 else "") + ".")
        codes, names, merge_notes = _merge_neighbours(
            codes, names, threshold,
            lambda members: names[members[0]] if len(members) == 1 else f"{names[members[0]]} to {names[members[-1]]}",
        )
    else:
        codes, names, merge_notes = _merge_into_other(codes, names, threshold, name)
    return codes, names, notes + merge_notes


def encode_typed(
    values: pd.Series,
    name: str | None = None,
    kind: AttributeType | None = None,
    n_bins: int = 4,
    min_class_size: int = 20,
    max_classes: int = 50,
) -> AttributeLabels:
    """Class labels for one attribute column, typed as `kind` (None: inferred, see `infer_attribute_type`).

    Users without a value are left out (`mask`). binary/categorical: one class per distinct value, sorted (by
    number when the values are numbers, so '2' < '10'). ordinal: the same, with the order recorded. numeric:
    `n_bins` quantile bins named by the range of values each holds ('18-25').

    Rare classes: a class with fewer users than `effective_min_class_size(min_class_size, n_labelled)` merges
    into 'other' (categorical) or into its smaller neighbour (ordinal, numeric); binary columns are never
    merged. Refused with a DataError: fewer than two classes (also after merging), or more than `max_classes`.
    Every inference, bin and merge is written to `notes`.
    """
    name = name or str(values.name)
    if kind is not None and kind not in ATTRIBUTE_TYPES:
        raise DataError(f"attribute {name!r}: unknown type {kind!r}; choose one of {', '.join(ATTRIBUTE_TYPES)}")
    present, mask = _present(values)
    inferred, reason = infer_attribute_type(values)
    notes: list[str] = []
    if kind is None or kind == inferred:
        kind = inferred
        notes.append(f"{kind}: {reason}")
    else:
        notes.append(f"{kind}: set by request (it would otherwise be read as {inferred}: {reason})")
    n_labelled = int(mask.sum())
    threshold = effective_min_class_size(min_class_size, n_labelled)
    if threshold < min_class_size and n_labelled:
        notes.append(f"with {n_labelled} labelled users, a class counts as rare below {threshold} users "
                     f"(not {min_class_size}).")
    n_missing = len(mask) - n_labelled
    if n_missing:
        notes.append(f"{n_missing} users without a value are left out.")

    if n_labelled and kind == "numeric":
        codes, names, encode_notes = _encode_numeric(present, name, n_bins, threshold)
    else:
        codes, names, encode_notes = _encode_classes(present, name, kind, threshold)
    notes.extend(encode_notes)

    if len(names) < 2:
        only = names[0] if names else "none"
        raise DataError(
            f"attribute {name!r} has a single class ({only!r}) after filtering; an attack needs two or more"
        )
    if len(names) > max_classes:
        raise DataError(
            f"attribute {name!r} has {len(names)} classes after merging rare ones, more than the {max_classes} an "
            "audit can support; bin it, group rare values, or choose numeric if its values are magnitudes"
        )
    return AttributeLabels(name, codes, tuple(names), mask, kind=kind, notes=tuple(notes))


# --------------------------------------------------------------------------------------------- overrides, views


def parse_type_overrides(specs: list[str] | None) -> dict[str, AttributeType]:
    """`--attribute-type occupation=categorical` (repeatable; commas also separate) -> {'occupation': ...}."""
    overrides: dict[str, AttributeType] = {}
    for spec in specs or []:
        for part in str(spec).split(","):
            if not part.strip():
                continue
            column, sep, kind = part.partition("=")
            column, kind = column.strip(), kind.strip().lower()
            if not sep or not column or not kind:
                raise DataError(f"attribute type {part.strip()!r}: expected NAME=TYPE, e.g. occupation=categorical, "
                                f"with TYPE one of {', '.join(ATTRIBUTE_TYPES)}")
            if kind not in ATTRIBUTE_TYPES:
                raise DataError(f"attribute type {part.strip()!r}: unknown type {kind!r}; "
                                f"choose one of {', '.join(ATTRIBUTE_TYPES)}")
            if column in overrides and overrides[column] != kind:
                raise DataError(f"attribute {column!r} was given two types: {overrides[column]} and {kind}")
            overrides[column] = kind  # type: ignore[assignment]
    return overrides


def describe_attribute(labels: AttributeLabels) -> dict:
    """What a page or report shows about an encoded attribute: its type, classes with counts, and the notes."""
    return {
        "name": labels.name,
        "kind": labels.kind,
        "n_classes": labels.n_classes,
        "n_labelled": int(np.sum(labels.mask)),
        "counts": labels.counts(),
        "notes": list(labels.notes),
    }
