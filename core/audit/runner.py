"""The audit: every attacker on every attribute of one representation, then a verdict per attribute."""
from __future__ import annotations

import time
from typing import Mapping, Sequence

import numpy as np
import torch

from ..data import AttributeLabels, DataError
from ..device import canonical
from ..progress import Progress
from ..progress import report
from .attackers import ATTACKERS, DEFAULT_ATTACKERS
from .protocols import MAX_AUDIT_USERS, CrossValidation, Protocol, make_folds, stratified_sample
from .verdict import (
    DEFAULT_TOLERANCE, METRICS, AttackScore, AttributeVerdict, AuditResult, decide, estimate, explain, fold_metrics,
    ridge_null_aucs, roc_points,
)

def run_audit(
    representation: np.ndarray | torch.Tensor,
    labels: Mapping[str, AttributeLabels],
    attackers: Sequence[str] = DEFAULT_ATTACKERS,
    protocol: Protocol = CrossValidation(),
    n_permutations: int = 200,
    seed: int = 0,
    progress: Progress | None = None,
    representation_name: str = "user",
    alpha: float = 0.05,
    tolerance: float = DEFAULT_TOLERANCE,
    max_users: int = MAX_AUDIT_USERS,
    n_representations: int = 1,
    device: torch.device | str = "cpu",
) -> AuditResult:
    """Attack `representation` (N × d) for each attribute with each attacker under `protocol`.

    `labels[a]` holds codes for the users where its mask is True; only those users are attacked for a (a stratified
    sample of `max_users` of them past that size, stated in the notes). p-values are Bonferroni-corrected over the
    attackers and the `n_representations` representations audited together. `n_permutations` = 0 skips the
    permutation test (p-values NaN, verdict from the gap against `tolerance` alone).
    """
    start = time.perf_counter()
    device = canonical(device)
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
    n_tests = max(1, len(tested) * max(1, n_representations))
    if n_permutations:
        # a permutation p-value is at least 1/(P+1); after Bonferroni it must still be able to fall below alpha,
        # or no leakage could ever be called significant
        needed = int(np.ceil(2 * n_tests / alpha))
        if n_permutations < needed:
            notes.append(f"{n_permutations} permutations cannot show significance for {n_tests} tests at "
                         f"alpha {alpha}; {needed} were used")
            n_permutations = needed
    total_steps = len(labels) * (len(attackers) + (1 if n_permutations else 0))
    step = 0

    def tick(message: str) -> None:
        nonlocal step
        step += 1
        report(progress, step / max(1, total_steps), message)

    for attribute, attribute_labels in labels.items():
        if len(attribute_labels.mask) != len(x):
            raise DataError(f"attribute {attribute!r} has labels for {len(attribute_labels.mask)} users but the "
                            f"representation has {len(x)} rows")
        xa = x[attribute_labels.mask]
        codes = attribute_labels.codes
        n_classes = attribute_labels.n_classes
        if len(codes) > max_users:
            sample = stratified_sample(codes, max_users, seed)
            xa, codes = xa[sample], codes[sample]
            notes.append(f"{attribute}: attacked a stratified sample of {len(codes):,} of {attribute_labels.mask.sum():,} "
                         f"labelled users (the AUC's standard error at this size is about "
                         f"{0.5 / np.sqrt(len(codes) / 4):.3f})")
        folds = make_folds(codes, protocol, seed, attribute)
        notes.extend(folds.notes)
        null = None
        if n_permutations and tested:
            null = np.abs(ridge_null_aucs(xa, codes, folds, n_classes, n_permutations, seed) - 0.5)
            tick(f"{attribute}: permutation null ({n_permutations} shuffles)")
        attribute_scores = []
        for attacker in attackers:
            info = ATTACKERS[attacker]
            t0 = time.perf_counter()
            probabilities = info.factory(xa, codes, folds, n_classes, seed, device)
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
                p_value = float(min(1.0, raw * n_tests))
            per_repeat = max(1, len(folds.pairs) // protocol.n_repeats)
            fold_aucs = np.array([f["AUC"] for f in per_fold], dtype=float)
            repeat_aucs = tuple(float(np.nanmean(fold_aucs[r:r + per_repeat]))
                                for r in range(0, per_repeat * (len(fold_aucs) // per_repeat), per_repeat))
            score = AttackScore(attribute, attacker, representation_name, protocol.label, metrics,
                                tuple(fpr.tolist()), tuple(tpr.tolist()), seconds, p_value, repeat_aucs)
            attribute_scores.append(score)
            tick(f"{attribute}: {info.label} AUC {score.auc:.3f}")
        scores.extend(attribute_scores)
        deciding = [s for s in attribute_scores if not ATTACKERS[s.attacker].baseline] or attribute_scores
        strongest = max(deciding, key=lambda s: abs(s.auc - 0.5))
        gap = abs(strongest.auc - 0.5)
        p_value = strongest.p_value if null is not None else float("nan")
        leaks, significant = decide(gap, p_value, tolerance, alpha)
        label = ATTACKERS[strongest.attacker].label
        interval = strongest.metrics["AUC"]
        verdicts.append(AttributeVerdict(
            attribute, strongest.auc, gap, p_value, leaks,
            explain(attribute, strongest.auc, p_value, leaks, label, alpha, tolerance, significant), label,
            int(len(codes)), attribute_labels.classes, tolerance, significant, representation_name,
            interval.low, interval.high,
        ))
    return AuditResult(tuple(scores), tuple(verdicts), representation_name, protocol.label, len(x), x.shape[1],
                       time.perf_counter() - start, tuple(notes),
                       {"attackers": list(attackers), "n_permutations": n_permutations, "seed": seed, "alpha": alpha,
                        "tolerance": tolerance, "max_users": max_users, "n_tests": n_tests})


def audit_model(model, labels: Mapping[str, AttributeLabels], table: torch.Tensor | None = None,
                **kwargs) -> dict[str, AuditResult]:
    """Audit every representation the model serves with (LightGCN: layer 0 and propagated; NeuMF: both tables
    together), with an edited table if given; p-values corrected over all of them."""
    from ..models import served_representations

    table = model.user_table() if table is None else torch.as_tensor(table).to(model.device)
    reps = served_representations(model, table)
    return {name: run_audit(rep, labels, representation_name=name, n_representations=len(reps), **kwargs)
            for name, rep in reps.items()}


def worst_verdicts(audits: Mapping[str, AuditResult]) -> dict[str, AttributeVerdict]:
    """Per attribute, the verdict of the representation that leaks most (what the headline shows)."""
    worst: dict[str, AttributeVerdict] = {}
    order = {"leaks": 2, "inconclusive": 1, "no leak": 0}
    for audit in audits.values():
        for verdict in audit.verdicts:
            current = worst.get(verdict.attribute)
            if current is None or (order[verdict.status], verdict.leakage) > (order[current.status], current.leakage):
                worst[verdict.attribute] = verdict
    return worst
