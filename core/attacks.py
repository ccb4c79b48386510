"""Attribute-inference attacks: the leakage audit (SPEC section 4).

An attacker sees a user representation and tries to predict an attribute. Protocols: balanced stratified k-fold
cross-validation repeated (default: 5 folds × 3, the reference code's, the strongest attacker) or a shadow split
(the attacker trains on a fraction of users, the paper's 10%). Each attacker gets AUC (macro one-vs-rest for
multi-class), accuracy, balanced accuracy, precision, recall and macro-F1 with 95% intervals, and ROC points.

Honest verdicts: a label-permutation null (same folds, shuffled labels, a ridge attacker that is solved for every
permutation at once) gives a p-value for the two-sided statistic |AUC − 0.5|. AUC far *below* 0.5 is leakage
too: after forcing the group means equal, cross-validation mirrors each fold's group difference and gives AUC
≈ 0.35; a reversed attacker would score 0.65. p-values are Bonferroni-corrected over the attackers tested.

Speed: the MLP attacker trains all folds as one batched torch model (the same architecture as scikit-learn's
MLPClassifier(hidden_layer_sizes=(100,), alpha=1.0): one hidden layer of 100 ReLU units, L2 penalty
alpha/(2n)·‖W‖², here full-batch Adam on standardised inputs); XGBoost fits run single-threaded in parallel.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from joblib import Parallel, delayed
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score, balanced_accuracy_score, f1_score, precision_score, recall_score, roc_auc_score, roc_curve,
)
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.preprocessing import StandardScaler

from .data import AttributeLabels, DataError
from .device import get_device
from .training import Progress

METRICS = ("AUC", "accuracy", "balanced accuracy", "precision", "recall", "macro-F1")
MIN_USERS_PER_CLASS = 2

# --------------------------------------------------------------------------------------------- protocols


@dataclass(frozen=True)
class CrossValidation:
    """Balanced (down-sampled to the smallest class) stratified k-fold cross-validation, repeated."""

    n_splits: int = 5
    n_repeats: int = 3
    balanced: bool = True

    @property
    def label(self) -> str:
        return f"{'balanced ' if self.balanced else ''}{self.n_splits}-fold CV ×{self.n_repeats}"


@dataclass(frozen=True)
class ShadowSplit:
    """The attacker trains on `train_fraction` of the users (stratified) and is tested on the rest, repeated."""

    train_fraction: float = 0.1
    n_repeats: int = 3
    balanced: bool = True

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


def _balanced_subset(codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of a random down-sample with equally many users of each class (the smallest class's count)."""
    smallest = np.bincount(codes).min()
    keep = [rng.choice(np.flatnonzero(codes == c), smallest, replace=False) for c in np.unique(codes)]
    return np.sort(np.concatenate(keep))


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
            splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed + repeat)
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
                                           random_state=seed + repeat)
            pairs.append((np.sort(train), np.sort(test)))
        ratio = (1 - protocol.train_fraction) / protocol.train_fraction
    return Folds(tuple(pairs), tuple(notes), ratio)


# --------------------------------------------------------------------------------------------- attackers
# An attacker takes (X, codes, folds, n_classes, seed) and returns out-of-fold class probabilities per fold.

FoldProbabilities = list[np.ndarray]


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scaler = StandardScaler().fit(train)
    return scaler.transform(train), scaler.transform(test)


def attack_majority(x, codes, folds: Folds, n_classes: int, seed: int) -> FoldProbabilities:
    """Baseline: always the training fold's class frequencies (AUC 0.5 by construction)."""
    out = []
    for train, test in folds.pairs:
        freq = np.bincount(codes[train], minlength=n_classes) / len(train)
        out.append(np.tile(freq, (len(test), 1)))
    return out


def attack_logreg(x, codes, folds: Folds, n_classes: int, seed: int) -> FoldProbabilities:
    """Logistic regression on standardised inputs (a linear attacker)."""
    def one(train, test):
        xtr, xte = _standardise(x[train], x[test])
        model = LogisticRegression(max_iter=1000, random_state=seed).fit(xtr, codes[train])
        return _full_proba(model.predict_proba(xte), model.classes_, n_classes)
    return Parallel(n_jobs=2, prefer="threads")(delayed(one)(tr, te) for tr, te in folds.pairs)


def attack_xgboost(x, codes, folds: Folds, n_classes: int, seed: int) -> FoldProbabilities:
    """XGBoost as in the reference code: depth 4, 50 trees, learning rate 0.5, histogram method."""
    from xgboost import XGBClassifier

    def one(train, test):
        present = np.unique(codes[train])
        remap = np.searchsorted(present, codes[train])
        model = XGBClassifier(n_estimators=50, max_depth=4, learning_rate=0.5, tree_method="hist", n_jobs=1,
                              random_state=seed, verbosity=0)
        model.fit(x[train], remap)
        return _full_proba(model.predict_proba(x[test]), present, n_classes)
    return Parallel(n_jobs=2, prefer="threads")(delayed(one)(tr, te) for tr, te in folds.pairs)


def _full_proba(proba: np.ndarray, classes: np.ndarray, n_classes: int) -> np.ndarray:
    full = np.zeros((len(proba), n_classes))
    full[:, classes] = proba
    return full


def attack_mlp(x, codes, folds: Folds, n_classes: int, seed: int, hidden: int = 100, alpha: float = 1.0,
               steps: int = 150, lr: float = 0.02) -> FoldProbabilities:
    """One hidden layer of 100 ReLU units with L2 alpha/(2n)·‖W‖² (scikit-learn's convention), all folds trained
    at once as one batched model (full-batch Adam on standardised inputs)."""
    device = get_device()
    n_folds = len(folds.pairs)
    n_train = max(len(tr) for tr, _ in folds.pairs)
    n_test = max(len(te) for _, te in folds.pairs)
    d = x.shape[1]
    xtr = np.zeros((n_folds, n_train, d), np.float32)
    xte = np.zeros((n_folds, n_test, d), np.float32)
    ytr = np.zeros((n_folds, n_train), np.int64)
    wtr = np.zeros((n_folds, n_train), np.float32)
    for f, (train, test) in enumerate(folds.pairs):
        a, b = _standardise(x[train], x[test])
        xtr[f, : len(train)], xte[f, : len(test)] = a, b
        ytr[f, : len(train)], wtr[f, : len(train)] = codes[train], 1.0
    xtr_t, xte_t = torch.as_tensor(xtr, device=device), torch.as_tensor(xte, device=device)
    ytr_t, wtr_t = torch.as_tensor(ytr, device=device), torch.as_tensor(wtr, device=device)
    counts = wtr_t.sum(1)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    # Glorot-uniform initialisation, as scikit-learn does
    bound1, bound2 = np.sqrt(6 / (d + hidden)), np.sqrt(6 / (hidden + n_classes))
    w1 = ((torch.rand(n_folds, d, hidden, generator=generator) * 2 - 1) * bound1).to(device).requires_grad_()
    b1 = ((torch.rand(n_folds, 1, hidden, generator=generator) * 2 - 1) * bound1).to(device).requires_grad_()
    w2 = ((torch.rand(n_folds, hidden, n_classes, generator=generator) * 2 - 1) * bound2).to(device).requires_grad_()
    b2 = ((torch.rand(n_folds, 1, n_classes, generator=generator) * 2 - 1) * bound2).to(device).requires_grad_()
    optimizer = torch.optim.Adam([w1, b1, w2, b2], lr=lr)
    for _ in range(steps):
        logits = torch.relu(xtr_t @ w1 + b1) @ w2 + b2
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, n_classes), ytr_t.reshape(-1), reduction="none")
        data_loss = (nll.reshape(n_folds, n_train) * wtr_t).sum(1) / counts
        penalty = alpha / (2 * counts) * (w1.pow(2).sum((1, 2)) + w2.pow(2).sum((1, 2)))
        loss = (data_loss + penalty).sum()  # independent per fold: the sum keeps their gradients separate
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        proba = torch.softmax(torch.relu(xte_t @ w1 + b1) @ w2 + b2, dim=-1).cpu().numpy()
    return [proba[f, : len(test)] for f, (_, test) in enumerate(folds.pairs)]


def attack_mlp_sklearn(x, codes, folds: Folds, n_classes: int, seed: int) -> FoldProbabilities:
    """The reference: scikit-learn's MLPClassifier(hidden_layer_sizes=(100,), alpha=1.0, max_iter=1000) on
    standardised inputs, one fit per fold. Tens of times slower than `attack_mlp`; offered so that anyone can
    check that the batched attacker is no weaker (tests and the audit bench compare the two)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    def one(train, test):
        xtr, xte = _standardise(x[train], x[test])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = MLPClassifier(hidden_layer_sizes=(100,), alpha=1.0, max_iter=1000, random_state=seed)
            model.fit(xtr, codes[train])
        return _full_proba(model.predict_proba(xte), model.classes_, n_classes)
    return Parallel(n_jobs=2, prefer="threads")(delayed(one)(tr, te) for tr, te in folds.pairs)


@dataclass(frozen=True)
class AttackerInfo:
    name: str
    label: str
    description: str
    factory: Callable[..., FoldProbabilities]
    baseline: bool = False  # a baseline is shown but never decides the verdict


ATTACKERS: dict[str, AttackerInfo] = {
    "mlp": AttackerInfo("mlp", "MLP", "one hidden layer of 100 units, L2 1.0 (the paper's attacker)", attack_mlp),
    "xgboost": AttackerInfo("xgboost", "XGBoost", "50 trees of depth 4, learning rate 0.5 (the reference code's)",
                            attack_xgboost),
    "logreg": AttackerInfo("logreg", "Logistic regression", "a linear attacker on standardised inputs", attack_logreg),
    "mlp_sklearn": AttackerInfo("mlp_sklearn", "MLP (scikit-learn)", "the reference MLPClassifier, same architecture "
                                "as MLP; slower, for cross-checking it", attack_mlp_sklearn),
    "majority": AttackerInfo("majority", "Majority class", "baseline: predicts class frequencies, AUC 0.5",
                             attack_majority, baseline=True),
}


# --------------------------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class Estimate:
    """A mean over folds with a 95% interval (corrected for the overlap of cross-validation training sets)."""

    mean: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


def estimate(values: Sequence[float], train_test_ratio: float) -> Estimate:
    """Mean with a Nadeau–Bengio corrected t interval: folds share training users, so the plain t interval
    would be too narrow."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return Estimate(mean, mean, mean)
    se = values.std(ddof=1) * np.sqrt(1 / len(values) + train_test_ratio)
    half = float(stats.t.ppf(0.975, len(values) - 1) * se)
    return Estimate(mean, max(0.0, mean - half), min(1.0, mean + half))  # every metric here lies in [0, 1]


def auc_score(codes: np.ndarray, proba: np.ndarray, n_classes: int) -> float:
    """ROC-AUC: binary, or macro one-vs-rest over the classes present in the test fold."""
    present = np.unique(codes)
    if len(present) < 2:
        return float("nan")
    if n_classes == 2:
        return float(roc_auc_score(codes, proba[:, 1]))
    scores = [roc_auc_score(codes == c, proba[:, c]) for c in present]
    return float(np.mean(scores))


def fold_metrics(codes: np.ndarray, proba: np.ndarray, n_classes: int) -> dict[str, float]:
    predicted = proba.argmax(1)
    average = "binary" if n_classes == 2 else "macro"
    return {
        "AUC": auc_score(codes, proba, n_classes),
        "accuracy": accuracy_score(codes, predicted),
        "balanced accuracy": balanced_accuracy_score(codes, predicted),
        "precision": precision_score(codes, predicted, average=average, zero_division=0),
        "recall": recall_score(codes, predicted, average=average, zero_division=0),
        "macro-F1": f1_score(codes, predicted, average="macro", zero_division=0),
    }


def roc_points(codes: np.ndarray, proba: np.ndarray, n_classes: int, grid: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """One ROC curve: binary, or the macro average of one-vs-rest curves on a common false-positive grid."""
    fpr_grid = np.linspace(0, 1, grid)
    classes = [1] if n_classes == 2 else list(np.unique(codes))
    curves = []
    for c in classes:
        positive = codes == c
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, proba[:, c])
        curves.append(np.interp(fpr_grid, fpr, tpr))
    tpr_mean = np.mean(curves, axis=0) if curves else fpr_grid
    tpr_mean[0] = 0.0
    return fpr_grid, tpr_mean


# --------------------------------------------------------------------------------------------- permutation null


def ridge_null_aucs(x: np.ndarray, codes: np.ndarray, folds: Folds, n_classes: int, n_permutations: int,
                    seed: int, ridge: float = 1.0) -> np.ndarray:
    """Mean-over-folds AUC of a ridge attacker for each of `n_permutations` label shufflings (same folds).

    Labels are shuffled within each fold's pool, and for every fold the ridge system is solved once for all
    permutations together (one matrix, many right-hand sides), which makes a few hundred permutations cheap.
    """
    rng = np.random.default_rng(seed + 7919)
    permuted = np.stack([rng.permutation(codes) for _ in range(n_permutations)], axis=1)  # users × P
    per_fold = []
    for train, test in folds.pairs:
        xtr, xte = _standardise(x[train], x[test])
        xtr = np.hstack([xtr, np.ones((len(train), 1))])
        xte = np.hstack([xte, np.ones((len(test), 1))])
        labels_tr = permuted[train]  # n_train × P
        targets = np.eye(n_classes)[labels_tr].reshape(len(train), -1)  # n_train × (P·C)
        gram = xtr.T @ xtr + ridge * np.eye(xtr.shape[1])
        weights = np.linalg.solve(gram, xtr.T @ targets)
        scores = (xte @ weights).reshape(len(test), n_permutations, n_classes)
        per_fold.append(_vectorised_auc(permuted[test], scores, n_classes))
    return np.mean(per_fold, axis=0)


def _vectorised_auc(labels: np.ndarray, scores: np.ndarray, n_classes: int) -> np.ndarray:
    """AUC for each column: labels (n × P), scores (n × P × C); binary uses class 1, else macro one-vs-rest."""
    classes = [1] if n_classes == 2 else range(n_classes)
    aucs = []
    for c in classes:
        positive = labels == c
        n_pos = positive.sum(0)
        n_neg = len(labels) - n_pos
        ranks = stats.rankdata(scores[:, :, c], axis=0)
        auc = (np.where(positive, ranks, 0).sum(0) - n_pos * (n_pos + 1) / 2) / np.maximum(n_pos * n_neg, 1)
        aucs.append(np.where((n_pos > 0) & (n_neg > 0), auc, np.nan))
    stacked = np.stack(aucs)
    counted = np.isfinite(stacked).sum(0)  # a class can be absent from a small fold: average the others
    return np.where(counted > 0, np.nansum(stacked, axis=0) / np.maximum(counted, 1), 0.5)


# --------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class AttackScore:
    """One attacker on one attribute: metrics with intervals, ROC points, its p-value and its runtime."""

    attribute: str
    attacker: str
    representation: str
    protocol: str
    metrics: dict[str, Estimate]
    roc_fpr: tuple[float, ...]
    roc_tpr: tuple[float, ...]
    seconds: float
    p_value: float = float("nan")  # Bonferroni-corrected two-sided permutation p-value (NaN for baselines)

    @property
    def auc(self) -> float:
        return self.metrics["AUC"].mean


@dataclass(frozen=True)
class AttributeVerdict:
    """Whether an attribute leaks: the attacker farthest from AUC 0.5, its two-sided leakage and p-value."""

    attribute: str
    auc: float
    leakage: float  # |auc − 0.5|
    p_value: float
    leaks: bool
    explanation: str
    attacker: str = ""
    n_users: int = 0
    classes: tuple[str, ...] = ()


def explain(attribute: str, auc: float, p_value: float, leaks: bool, attacker: str, alpha: float) -> str:
    """The verdict in one sentence, two-sided: AUC far below 0.5 is leakage too, never 'better than random'."""
    if not leaks:
        return (f"No significant leakage of {attribute}: the strongest attacker ({attacker}, AUC {auc:.3f}) is "
                f"within what shuffled labels produce (p = {p_value:.3f}).")
    if auc < 0.5:
        return (f"{attribute} leaks (p = {p_value:.3g}): AUC {auc:.3f} is far below 0.5, which is information too: "
                f"the attacker's predictions are systematically reversed (as when group means are forced equal, "
                f"mirroring each fold's difference), so a flipped attacker would reach {1 - auc:.3f}.")
    return f"{attribute} leaks: the {attacker} attacker reaches AUC {auc:.3f}, beyond chance (p = {p_value:.3g})."


@dataclass(frozen=True)
class AuditResult:
    """The audit of one representation: every attacker on every attribute, and a verdict per attribute."""

    scores: tuple[AttackScore, ...]
    verdicts: tuple[AttributeVerdict, ...]
    representation: str
    protocol: str
    n_users: int
    dim: int
    seconds: float
    notes: tuple[str, ...] = ()
    params: dict = field(default_factory=dict)

    def score(self, attribute: str, attacker: str) -> AttackScore:
        for s in self.scores:
            if s.attribute == attribute and s.attacker == attacker:
                return s
        raise KeyError(f"no score for attribute {attribute!r} and attacker {attacker!r}")

    def auc(self, attribute: str, attacker: str) -> float:
        return self.score(attribute, attacker).auc

    def verdict(self, attribute: str) -> AttributeVerdict:
        for v in self.verdicts:
            if v.attribute == attribute:
                return v
        raise KeyError(f"no verdict for attribute {attribute!r}")

    def to_frame(self) -> pd.DataFrame:
        """One row per attribute × attacker: each metric's mean and interval, the p-value and the verdict."""
        rows = []
        for s in self.scores:
            verdict = self.verdict(s.attribute)
            row = {"representation": s.representation, "attribute": s.attribute,
                   "attacker": ATTACKERS[s.attacker].label if s.attacker in ATTACKERS else s.attacker}
            for name in METRICS:
                est = s.metrics[name]
                row[name], row[f"{name} low"], row[f"{name} high"] = est.mean, est.low, est.high
            row["|AUC − 0.5|"] = abs(s.auc - 0.5)
            row["p-value"] = s.p_value
            row["attribute verdict"] = "leaks" if verdict.leaks else "no significant leakage"
            row["seconds"] = s.seconds
            rows.append(row)
        return pd.DataFrame(rows)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, default=float)

    def to_markdown(self) -> str:
        frame = self.to_frame()
        shown = frame[["attribute", "attacker", "AUC", "AUC low", "AUC high", "accuracy", "p-value", "attribute verdict"]]
        lines = [f"## Attribute-inference audit: {self.representation}",
                 f"{self.n_users} users × {self.dim} dimensions, {self.protocol}, {self.seconds:.1f} s.", "",
                 shown.to_markdown(index=False, floatfmt=".3f"), ""]
        lines += [f"- {v.explanation}" for v in self.verdicts]
        lines += [f"- note: {n}" for n in self.notes]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------- the audit


def run_audit(
    representation: np.ndarray | torch.Tensor,
    labels: Mapping[str, AttributeLabels],
    attackers: Sequence[str] = ("mlp", "xgboost"),
    protocol: Protocol = CrossValidation(),
    n_permutations: int = 200,
    seed: int = 0,
    progress: Progress | None = None,
    representation_name: str = "user",
    alpha: float = 0.05,
) -> AuditResult:
    """Attack `representation` (N × d) for each attribute with each attacker under `protocol`.

    `labels[a]` holds codes for the users where its mask is True; only those users are attacked for a.
    `n_permutations` = 0 skips the permutation test (p-values NaN, verdict from |AUC − 0.5| > 0.05 alone).
    """
    start = time.perf_counter()
    x = representation.detach().cpu().numpy() if isinstance(representation, torch.Tensor) else np.asarray(representation)
    x = x.astype(np.float32, copy=False)
    if x.ndim != 2:
        raise DataError(f"the representation must be a users × dimensions table, got shape {x.shape}")
    if not np.isfinite(x).all():
        bad = np.flatnonzero(~np.isfinite(x).all(1))
        raise DataError(f"the representation has NaN or infinite values in {len(bad)} rows (first: {bad[:5].tolist()})")
    unknown = [a for a in attackers if a not in ATTACKERS]
    if unknown:
        raise ValueError(f"unknown attacker(s) {unknown}; choose from {', '.join(ATTACKERS)}")
    scores, verdicts, notes = [], [], []
    tested = [a for a in attackers if not ATTACKERS[a].baseline]
    if n_permutations:
        # a permutation p-value is at least 1/(P+1); after Bonferroni over the attackers it must still be able to
        # fall below alpha, or no leakage could ever be called significant
        needed = int(np.ceil(2 * len(tested) / alpha))
        if n_permutations < needed:
            notes.append(f"{n_permutations} permutations cannot show significance for {len(tested)} attackers at "
                         f"alpha {alpha}; {needed} were used")
            n_permutations = needed
    total_steps = len(labels) * (len(attackers) + (1 if n_permutations else 0))
    step = 0

    def report(message: str) -> None:
        nonlocal step
        step += 1
        if progress is not None:
            progress(step / max(1, total_steps), message)

    for attribute, attribute_labels in labels.items():
        if len(attribute_labels.mask) != len(x):
            raise DataError(f"attribute {attribute!r} has labels for {len(attribute_labels.mask)} users but the "
                            f"representation has {len(x)} rows")
        xa = x[attribute_labels.mask]
        codes = attribute_labels.codes
        n_classes = attribute_labels.n_classes
        folds = make_folds(codes, protocol, seed, attribute)
        notes.extend(folds.notes)
        null = None
        if n_permutations and tested:
            null = np.abs(ridge_null_aucs(xa, codes, folds, n_classes, n_permutations, seed) - 0.5)
            report(f"{attribute}: permutation null ({n_permutations} shuffles)")
        attribute_scores = []
        for attacker in attackers:
            info = ATTACKERS[attacker]
            t0 = time.perf_counter()
            probabilities = info.factory(xa, codes, folds, n_classes, seed)
            seconds = time.perf_counter() - t0
            per_fold = [fold_metrics(codes[test], proba, n_classes) for (_, test), proba in zip(folds.pairs, probabilities)]
            metrics = {m: estimate([f[m] for f in per_fold if np.isfinite(f[m])], folds.train_test_ratio) for m in METRICS}
            first_repeat = range(max(1, len(folds.pairs) // protocol.n_repeats))  # each user scored once
            roc_codes = np.concatenate([codes[folds.pairs[i][1]] for i in first_repeat])
            roc_proba = np.concatenate([probabilities[i] for i in first_repeat])
            fpr, tpr = roc_points(roc_codes, roc_proba, n_classes)
            p_value = float("nan")
            if null is not None and not info.baseline:
                observed = abs(metrics["AUC"].mean - 0.5)
                raw = (1 + np.sum(null >= observed - 1e-12)) / (1 + len(null))
                p_value = float(min(1.0, raw * len(tested)))
            score = AttackScore(attribute, attacker, representation_name, protocol.label, metrics,
                                tuple(fpr.tolist()), tuple(tpr.tolist()), seconds, p_value)
            attribute_scores.append(score)
            report(f"{attribute}: {info.label} AUC {score.auc:.3f}")
        scores.extend(attribute_scores)
        deciding = [s for s in attribute_scores if not ATTACKERS[s.attacker].baseline] or attribute_scores
        strongest = max(deciding, key=lambda s: abs(s.auc - 0.5))
        if null is not None:
            p_value = min(s.p_value for s in deciding)
            leaks = p_value < alpha
        else:
            p_value, leaks = float("nan"), abs(strongest.auc - 0.5) > 0.05
        label = ATTACKERS[strongest.attacker].label
        verdicts.append(AttributeVerdict(
            attribute, strongest.auc, abs(strongest.auc - 0.5), p_value, leaks,
            explain(attribute, strongest.auc, p_value, leaks, label, alpha), label, int(len(codes)),
            attribute_labels.classes,
        ))
    return AuditResult(tuple(scores), tuple(verdicts), representation_name, protocol.label, len(x), x.shape[1],
                       time.perf_counter() - start, tuple(notes),
                       {"attackers": list(attackers), "n_permutations": n_permutations, "seed": seed, "alpha": alpha})


def audit_model(model, labels: Mapping[str, AttributeLabels], table: torch.Tensor | None = None,
                **kwargs) -> dict[str, AuditResult]:
    """Audit every representation the model exposes (LightGCN: layer 0 and propagated), with an edited table."""
    return {name: run_audit(rep, labels, representation_name=name, **kwargs)
            for name, rep in model.representations(table).items()}
