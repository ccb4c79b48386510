"""Forget requests (SPEC section 6): which training interactions a model must forget.

A request is built from the dataset's own ids (a CSV of (user, item) pairs, a list of users, a list of items) or
drawn at random for demos (x% of training interactions, x% of users). Ids are validated against the model's
dataset: unknown ids are refused with a message naming them, and so is a request that forgets nothing.
Everything downstream works on the resolved contiguous indices and on `retained_split`, the split with the
forgotten interactions removed (from training, and from validation and test when a request names them).
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
import pandas as pd

from ...data import DataError, Split

MAX_REQUEST_BYTES = 50 * 1024 * 1024  # a request file larger than this is refused
USER_COLUMNS = ("user", "user_id", "userid", "uid")
ITEM_COLUMNS = ("item", "item_id", "itemid", "iid", "movie_id", "movieid")
KINDS = ("pairs", "users", "items", "random interactions", "random users")


def _keys(pairs: np.ndarray, n_items: int) -> np.ndarray:
    return pairs[:, 0].astype(np.int64) * n_items + pairs[:, 1]


@dataclass(frozen=True, eq=False)
class ForgetRequest:
    """The training pairs to forget (contiguous indices into `split.train`), what asked for them, and the split
    without them. `users` / `items` are the whole users or items forgotten (empty for pair requests)."""

    kind: str
    split: Split = field(repr=False)
    pairs: np.ndarray = field(repr=False)  # (n, 2) int64 (user index, item index), every one a training pair
    users: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    items: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    description: str = ""
    seed: int = 0

    @property
    def n_pairs(self) -> int:
        return len(self.pairs)

    @cached_property
    def affected_users(self) -> np.ndarray:
        """Users with at least one forgotten pair."""
        return np.unique(self.pairs[:, 0])

    @cached_property
    def affected_items(self) -> np.ndarray:
        """Items with at least one forgotten pair."""
        return np.unique(self.pairs[:, 1])

    @cached_property
    def retained_split(self) -> Split:
        """The split without the forgotten pairs: training loses them; validation and test lose the forgotten
        users' and items' interactions (and any requested pair), so nobody is evaluated on what was deleted."""
        split, n_items = self.split, self.split.n_items
        gone = _keys(self.pairs, n_items)

        def keep(part: np.ndarray) -> np.ndarray:
            mask = ~np.isin(_keys(part, n_items), gone)
            if len(self.users):
                mask &= ~np.isin(part[:, 0], self.users)
            if len(self.items):
                mask &= ~np.isin(part[:, 1], self.items)
            return part[mask]

        return replace(split, train=keep(split.train), valid=keep(split.valid), test=keep(split.test))

    def to_frame(self) -> pd.DataFrame:
        """The forgotten pairs in the dataset's own ids (what a privacy officer files)."""
        dataset = self.split.dataset
        return pd.DataFrame({"user": dataset.user_ids[self.pairs[:, 0]], "item": dataset.item_ids[self.pairs[:, 1]]})

    def summary(self) -> str:
        return (f"{self.description}: {self.n_pairs:,} training interactions of {len(self.affected_users):,} users "
                f"and {len(self.affected_items):,} items")


# --------------------------------------------------------------------------------------------- building


def _indices(raw: np.ndarray, known: np.ndarray, what: str, source: str) -> np.ndarray:
    """Map raw ids to contiguous indices; unknown ids are refused, naming (up to ten of) them."""
    raw = np.asarray(raw, dtype=np.int64)
    position = np.searchsorted(known, raw).clip(max=max(0, len(known) - 1))
    found = (len(known) > 0) & (known[position] == raw)
    if not found.all():
        unknown = list(dict.fromkeys(raw[~found].tolist()))
        shown = ", ".join(map(str, unknown[:10])) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise DataError(f"{source}: {len(unknown)} {what} id(s) not in the model's dataset: {shown}. Use the "
                        f"dataset's own {what} ids (as in its interactions file)")
    return position.astype(np.int64)


def _nonempty(pairs: np.ndarray, source: str, why: str) -> None:
    if len(pairs) == 0:
        raise DataError(f"{source}: the request forgets nothing ({why}); a forget request must name at least one "
                        "training interaction")


def request_for_pairs(split: Split, raw_users, raw_items, source: str = "request", seed: int = 0) -> ForgetRequest:
    """Forget these (user, item) interactions, given in the dataset's own ids. Pairs that are not interactions of
    the dataset are refused; held-out (validation/test) pairs are dropped from evaluation but were never trained on,
    so at least one must be a training interaction."""
    dataset = split.dataset
    raw_users, raw_items = np.asarray(raw_users), np.asarray(raw_items)
    if len(raw_users) == 0:
        _nonempty(np.zeros((0, 2)), source, "no pairs")
    users = _indices(raw_users, dataset.user_ids, "user", source)
    items = _indices(raw_items, dataset.item_ids, "item", source)
    pairs = np.unique(np.stack([users, items], 1), axis=0)
    known = np.isin(_keys(pairs, split.n_items), _keys(np.stack([dataset.users, dataset.items], 1), split.n_items))
    if not known.all():
        bad = pairs[~known][:10]
        shown = ", ".join(f"({dataset.user_ids[u]}, {dataset.item_ids[i]})" for u, i in bad)
        raise DataError(f"{source}: {int((~known).sum())} (user, item) pair(s) are not interactions of the model's "
                        f"dataset: {shown}. Only recorded interactions can be forgotten")
    trained = pairs[np.isin(_keys(pairs, split.n_items), _keys(split.train, split.n_items))]
    _nonempty(trained, source, "none of the pairs is a training interaction: the model never trained on them")
    return ForgetRequest("pairs", split, trained, description=f"{len(pairs):,} pairs from {source}", seed=seed)


def request_for_users(split: Split, raw_users, source: str = "request", seed: int = 0) -> ForgetRequest:
    """Forget every interaction of these users (dataset ids)."""
    if len(np.asarray(raw_users)) == 0:
        _nonempty(np.zeros((0, 2)), source, "no users")
    users = np.unique(_indices(raw_users, split.dataset.user_ids, "user", source))
    pairs = split.train[np.isin(split.train[:, 0], users)]
    _nonempty(pairs, source, "these users have no training interactions")
    return ForgetRequest("users", split, pairs, users=users, description=f"{len(users):,} users from {source}",
                         seed=seed)


def request_for_items(split: Split, raw_items, source: str = "request", seed: int = 0) -> ForgetRequest:
    """Forget every interaction with these items (dataset ids)."""
    if len(np.asarray(raw_items)) == 0:
        _nonempty(np.zeros((0, 2)), source, "no items")
    items = np.unique(_indices(raw_items, split.dataset.item_ids, "item", source))
    pairs = split.train[np.isin(split.train[:, 1], items)]
    _nonempty(pairs, source, "these items have no training interactions")
    return ForgetRequest("items", split, pairs, items=items, description=f"{len(items):,} items from {source}",
                         seed=seed)


def _check_fraction(fraction: float, what: str) -> float:
    fraction = float(fraction)
    if not 0 < fraction < 1:
        raise DataError(f"the random share of {what} must be between 0 and 1 (0.01 = 1%), got {fraction}")
    return fraction


def random_interactions(split: Split, fraction: float, seed: int = 0) -> ForgetRequest:
    """A demo request: a seeded random `fraction` of the training interactions (at least one)."""
    fraction = _check_fraction(fraction, "interactions")
    rng = np.random.default_rng(seed)
    n = max(1, int(round(fraction * len(split.train))))
    chosen = np.sort(rng.choice(len(split.train), n, replace=False))
    return ForgetRequest("random interactions", split, split.train[chosen],
                         description=f"random {fraction:.1%} of training interactions (seed {seed})", seed=seed)


def random_users(split: Split, fraction: float, seed: int = 0) -> ForgetRequest:
    """A demo request: every interaction of a seeded random `fraction` of the users (at least one)."""
    fraction = _check_fraction(fraction, "users")
    rng = np.random.default_rng(seed)
    n = max(1, int(round(fraction * split.n_users)))
    users = np.sort(rng.choice(split.n_users, n, replace=False))
    pairs = split.train[np.isin(split.train[:, 0], users)]
    return ForgetRequest("random users", split, pairs, users=users,
                         description=f"random {fraction:.1%} of users (seed {seed})", seed=seed)


def _integer_ids(values: pd.Series, source: str, column: str) -> np.ndarray:
    numeric = pd.to_numeric(values.str.strip(), errors="coerce")
    bad = numeric.isna() | (numeric != np.floor(numeric))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{source} line {row + 2}: {column} {values.iloc[row]!r} is not an integer id; use the "
                        "dataset's own ids")
    return numeric.to_numpy(dtype=np.int64)


def read_request(data: bytes, split: Split, source: str = "request.csv", seed: int = 0) -> ForgetRequest:
    """A request file (CSV or TSV with a header): user and item columns = pairs; only a user column = whole users;
    only an item column = whole items."""
    if len(data) > MAX_REQUEST_BYTES:
        raise DataError(f"{source}: {len(data) / 1e6:.0f} MB is over the {MAX_REQUEST_BYTES / 1e6:.0f} MB limit "
                        "for a forget request")
    if not data.strip():
        raise DataError(f"{source}: the file is empty; a forget request must name at least one interaction")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{source}: not a UTF-8 text file (byte {error.start}); save it as CSV") from error
    first = text.splitlines()[0] if text.splitlines() else ""
    sep = max(",\t;|", key=first.count) if any(c in first for c in ",\t;|") else ","
    try:
        frame = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, ValueError) as error:
        raise DataError(f"{source}: could not be read as a table ({error})") from error
    lower = {str(c).strip().lower(): c for c in frame.columns}
    user_column = next((lower[c] for c in USER_COLUMNS if c in lower), None)
    item_column = next((lower[c] for c in ITEM_COLUMNS if c in lower), None)
    if user_column is None and item_column is None:
        raise DataError(f"{source}: no user or item column; expected a header with one of {', '.join(USER_COLUMNS)} "
                        f"and/or one of {', '.join(ITEM_COLUMNS)}, found {', '.join(map(repr, frame.columns))}")
    if frame.empty:
        raise DataError(f"{source}: the file has a header but no rows; a forget request must name at least one "
                        "interaction")
    if user_column is not None and item_column is not None:
        return request_for_pairs(split, _integer_ids(frame[user_column], source, "user"),
                                 _integer_ids(frame[item_column], source, "item"), source, seed)
    if user_column is not None:
        return request_for_users(split, _integer_ids(frame[user_column], source, "user"), source, seed)
    return request_for_items(split, _integer_ids(frame[item_column], source, "item"), source, seed)
