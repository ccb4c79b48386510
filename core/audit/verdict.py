"""Scores, intervals, the permutation null and the verdict (SPEC section 4): two-sided, corrected for every attacker
and representation tried, with significance and size kept apart."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import (
    accuracy_score, balanced_accuracy_score, f1_score, precision_score, recall_score, roc_auc_score, roc_curve,
)

from .attackers import ATTACKERS, _standardise
from .protocols import Folds

METRICS = ("AUC", "accuracy", "balanced accuracy", "precision", "recall", "macro-F1")



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
    repeat_aucs: tuple[float, ...] = ()  # the AUC of each repeat of the protocol (each a fresh partition of the users)

    @property
    def auc(self) -> float:
        return self.metrics["AUC"].mean


DEFAULT_TOLERANCE = 0.05  # |AUC − 0.5| a privacy officer accepts; the same number the unlearning methods aim at


@dataclass(frozen=True)
class AttributeVerdict:
    """Whether an attribute leaks, with significance and size kept apart: the attacker farthest from AUC 0.5, its
    two-sided gap |AUC − 0.5| against the tolerance, and its corrected permutation p-value.

    status: 'leaks' (gap above the tolerance and significant), 'no leak' (gap within the tolerance, or not
    significant at all with a gap inside it), 'inconclusive' (gap above the tolerance but not significant: too few
    users to tell, which a release gate must not pass)."""

    attribute: str
    auc: float
    leakage: float  # |auc − 0.5|
    p_value: float
    leaks: bool
    explanation: str
    attacker: str = ""
    n_users: int = 0
    classes: tuple[str, ...] = ()
    tolerance: float = DEFAULT_TOLERANCE
    significant: bool = False
    representation: str = ""
    auc_low: float = float("nan")
    auc_high: float = float("nan")

    @property
    def status(self) -> str:
        if self.leaks:
            return "leaks"
        return "inconclusive" if self.leakage > self.tolerance else "no leak"


def decide(gap: float, p_value: float, tolerance: float, alpha: float) -> tuple[bool, bool]:
    """(leaks, significant): leakage needs both a gap above the tolerance and significance (when tested)."""
    significant = bool(p_value < alpha) if np.isfinite(p_value) else gap > tolerance
    return significant and gap > tolerance, significant


def explain(attribute: str, auc: float, p_value: float, leaks: bool, attacker: str, alpha: float,
            tolerance: float = DEFAULT_TOLERANCE, significant: bool | None = None) -> str:
    """The verdict in one sentence, two-sided: AUC far below 0.5 is leakage too, never 'better than random'."""
    gap = abs(auc - 0.5)
    p_text = f"p = {p_value:.3g}" if np.isfinite(p_value) else "no permutation test"
    if leaks and auc < 0.5:
        return (f"{attribute} leaks ({p_text}): AUC {auc:.3f} is far below 0.5, which is information too: the "
                f"attacker's predictions are systematically reversed (as when group means are forced exactly equal, "
                f"mirroring each fold's difference), so a flipped attacker would reach {1 - auc:.3f}.")
    if leaks:
        return (f"{attribute} leaks: the {attacker} attacker reaches AUC {auc:.3f}, |AUC − 0.5| = {gap:.3f} above the "
                f"tolerance {tolerance:.3f}, beyond chance ({p_text}).")
    if gap > tolerance:
        return (f"{attribute}: inconclusive. The {attacker} attacker's AUC {auc:.3f} is {gap:.3f} from 0.5, above the "
                f"tolerance {tolerance:.3f}, but not significant ({p_text}): too few users to tell. Treat it as a "
                f"possible leak.")
    if significant:
        return (f"No leak of {attribute} beyond the tolerance: the strongest attacker ({attacker}, AUC {auc:.3f}) is "
                f"{gap:.3f} from 0.5, within {tolerance:.3f}, although with this many users even that small gap is "
                f"significant ({p_text}).")
    return (f"No leak of {attribute}: the strongest attacker ({attacker}, AUC {auc:.3f}) is within {tolerance:.3f} "
            f"of 0.5 and within what shuffled labels produce ({p_text}).")


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
            row["attribute verdict"] = verdict.status
            row["seconds"] = s.seconds
            rows.append(row)
        return pd.DataFrame(rows)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, default=float)

    def to_markdown(self) -> str:
        frame = self.to_frame()
        shown = frame[["attribute", "attacker", "AUC", "AUC low", "AUC high", "|AUC − 0.5|", "p-value",
                       "attribute verdict"]]
        lines = [f"## Attribute-inference audit: {self.representation}",
                 f"{self.n_users} users × {self.dim} dimensions, {self.protocol}, {self.seconds:.1f} s.", "",
                 shown.to_markdown(index=False, floatfmt=".3f"), ""]
        lines += [f"- {v.explanation}" for v in self.verdicts]
        lines += [f"- note: {n}" for n in self.notes]
        return "\n".join(lines)

