"""Attack protocols (SPEC section 4): stratified k-fold cross-validation repeated, or a shadow split, over all the
users that have the attribute (AUC needs no class balancing), and a stratified sample past `max_users`."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from ..data import DataError

MIN_USERS_PER_CLASS = 2
MAX_AUDIT_USERS = 50_000  # past this, attack a stratified sample: the AUC's standard error is then ~0.003


@dataclass(frozen=True)
class CrossValidation:
    """Stratified k-fold cross-validation, repeated, on every labelled user. `balanced=True` down-samples to the
    smallest class first (the reference code's habit; it throws users away and AUC does not need it)."""

    n_splits: int = 5
    n_repeats: int = 3
    balanced: bool = False

    @property
    def label(self) -> str:
        return f"{'balanced ' if self.balanced else ''}{self.n_splits}-fold CV ×{self.n_repeats}"


@dataclass(frozen=True)
class ShadowSplit:
    """The attacker trains on `train_fraction` of the users (stratified) and is tested on the rest, repeated."""

    train_fraction: float = 0.1
    n_repeats: int = 3
    balanced: bool = False

    @property
    def label(self) -> str:
        return f"shadow split (attacker trains on {self.train_fraction:.0%})"


Protocol = CrossValidation | ShadowSplit
PROTOCOLS: dict[str, Protocol] = {"cv": CrossValidation(), "shadow": ShadowSplit()}


@dataclass(frozen=True)
class Folds:
    """Train/test index pairs (into the attacked users) and what the protocol had to adapt."""

    pairs: tuple[tuple[np.ndarray, np.ndarray], ...]
    notes: tuple[str, ...]
    train_test_ratio: float  # n_test / n_train, for the corrected interval


def stratified_sample(codes: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of a class-stratified random sample of `size` users (every class keeps its share, at least
    MIN_USERS_PER_CLASS users where it has them)."""
    if size >= len(codes):
        return np.arange(len(codes))
    rng = np.random.default_rng(seed + 104729)
    keep = []
    for c in np.unique(codes):
        members = np.flatnonzero(codes == c)
        take = min(len(members), max(MIN_USERS_PER_CLASS, int(round(size * len(members) / len(codes)))))
        keep.append(rng.choice(members, take, replace=False))
    return np.sort(np.concatenate(keep))


def _balanced_subset(codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of a random down-sample with equally many users of each class (the smallest class's count)."""
    smallest = np.bincount(codes).min()
    keep = [rng.choice(np.flatnonzero(codes == c), smallest, replace=False) for c in np.unique(codes)]
    return np.sort(np.concatenate(keep))


def repeat_seed(seed: int, repeat: int) -> int:
    """The partition seed of one repeat. Derived, not `seed + repeat`: with that, audits seeded 0 and 1 shared two
    of their three partitions, so a "re-audit with another seed" was not independent of the audit it checked."""
    return int(np.random.SeedSequence([seed, repeat]).generate_state(1)[0])


def make_folds(codes: np.ndarray, protocol: Protocol, seed: int, attribute: str) -> Folds:
    """The protocol's folds for these labels; too-small classes reduce the fold count, with a note."""
    counts = np.bincount(codes)
    counts = counts[counts > 0]
    if len(counts) < 2:
        raise DataError(f"attribute {attribute!r}: only one class among the attacked users")
    if counts.min() < MIN_USERS_PER_CLASS:
        raise DataError(f"attribute {attribute!r}: a class has only {counts.min()} user(s); every class needs "
                        f"at least {MIN_USERS_PER_CLASS} users to be attacked and scored")
    notes: list[str] = []
    pairs = []
    rng = np.random.default_rng(seed)
    if isinstance(protocol, CrossValidation):
        n_splits = protocol.n_splits
        if counts.min() < n_splits:
            n_splits = int(counts.min())
            notes.append(f"{attribute}: the smallest class has {counts.min()} users, so {n_splits}-fold CV was "
                         f"used instead of {protocol.n_splits}-fold")
        for repeat in range(protocol.n_repeats):
            pool = _balanced_subset(codes, rng) if protocol.balanced else np.arange(len(codes))
            splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=repeat_seed(seed, repeat))
            for train, test in splitter.split(pool, codes[pool]):
                pairs.append((pool[train], pool[test]))
        ratio = 1.0 / (n_splits - 1)
    else:
        for repeat in range(protocol.n_repeats):
            pool = _balanced_subset(codes, rng) if protocol.balanced else np.arange(len(codes))
            n_classes = len(np.unique(codes[pool]))
            train_size = max(n_classes, int(round(protocol.train_fraction * len(pool))))
            if len(pool) - train_size < n_classes:
                raise DataError(f"attribute {attribute!r}: too few users for a {protocol.label}")
            train, test = train_test_split(pool, train_size=train_size, stratify=codes[pool],
                                           random_state=repeat_seed(seed, repeat))
            pairs.append((np.sort(train), np.sort(test)))
        ratio = (1 - protocol.train_fraction) / protocol.train_fraction
    return Folds(tuple(pairs), tuple(notes), ratio)

