"""The leakage audit (SPEC section 4): attribute-inference attacks on every representation a model serves with,
under cross-validation or a shadow split, two-sided verdicts with corrected permutation p-values.

protocols.py (folds, sampling) -> attackers.py (registry) -> verdict.py (scores, null, verdicts) -> runner.py.
"""
from __future__ import annotations

from .attackers import ATTACKER_SETS, ATTACKERS, DEFAULT_ATTACKERS, THOROUGH_ATTACKERS, AttackerInfo
from .protocols import MAX_AUDIT_USERS, PROTOCOLS, CrossValidation, Folds, Protocol, ShadowSplit, make_folds
from .runner import audit_model, run_audit, worst_verdicts
from .verdict import (
    DEFAULT_TOLERANCE, METRICS, AttackScore, AttributeVerdict, AuditResult, Estimate, auc_score, estimate,
)

__all__ = [
    "ATTACKER_SETS", "ATTACKERS", "DEFAULT_ATTACKERS", "THOROUGH_ATTACKERS", "AttackerInfo", "MAX_AUDIT_USERS",
    "PROTOCOLS", "CrossValidation", "Folds", "Protocol", "ShadowSplit", "make_folds", "audit_model", "run_audit",
    "worst_verdicts", "DEFAULT_TOLERANCE", "METRICS", "AttackScore", "AttributeVerdict", "AuditResult", "Estimate",
    "auc_score", "estimate",
]
