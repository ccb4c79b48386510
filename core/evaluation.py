"""One before/after comparison of attribute-unlearning results, used by the Unlearning page and the benchmark.

For the original table and each edited one: the audit of every representation an attacker could see (LightGCN:
layer 0 and propagated), full-ranking NDCG/HR with the edited table plugged into the same model and scoring
function, the mean per-user Jaccard overlap of top-20 lists before and after, and the runtime.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .audit import ATTACKERS, DEFAULT_ATTACKERS, AuditResult, CrossValidation, Protocol, run_audit
from .audit.runner import worst_verdicts
from .audit.verdict import DEFAULT_TOLERANCE, AttributeVerdict
from .data import AttributeLabels, Split
from .device import canonical
from .metrics import RankingResult, evaluate_full, top_k_items
from .models import Recommender, served_representations
from .progress import Progress
from .unlearning.attribute import UNLEARNERS, UnlearningResult, make_unlearner


@dataclass(frozen=True)
class MethodEvaluation:
    """One row of the comparison: a method's (or the original's) leakage, quality, stability and runtime."""

    label: str
    method: str  # "original" for the unedited table
    audits: dict[str, AuditResult]
    ranking: RankingResult | None
    top_k_jaccard: float | None
    seconds: float
    result: UnlearningResult | None

    @property
    def verdicts(self) -> dict[str, AttributeVerdict]:
        """Per attribute, the verdict of the representation that leaks most."""
        return worst_verdicts(self.audits)

    @property
    def verdict(self) -> str:
        """'leaks', 'inconclusive' or 'no leak' over every attribute and representation (the worst)."""
        statuses = {v.status for v in self.verdicts.values()}
        return next((s for s in ("leaks", "inconclusive") if s in statuses), "no leak")


@dataclass(frozen=True)
class Comparison:
    rows: tuple[MethodEvaluation, ...]

    def to_frame(self, intervals: bool = True) -> pd.DataFrame:
        """One row per method: runtime, NDCG/HR, top-20 Jaccard, and 'AUC <attribute> <attacker> [<rep>]'."""
        records = []
        multi_rep = any(len(r.audits) > 1 for r in self.rows)
        for row in self.rows:
            record = {"method": row.label, "verdict": row.verdict,
                      "worst |AUC − 0.5|": max((v.leakage for v in row.verdicts.values()), default=float("nan")),
                      "runtime s": round(row.seconds, 3)}
            if row.result is not None and "target_gap" in row.result.details:
                record["target"] = row.result.details["target_gap"]
                record["target reached"] = row.result.details["reached"]
            if row.ranking is not None:
                record.update({k: v for k, v in row.ranking.metrics.items() if k.startswith(("NDCG", "HR"))})
            record["top-20 Jaccard"] = row.top_k_jaccard
            for rep, audit in row.audits.items():
                for score in audit.scores:
                    name = f"AUC {score.attribute} {ATTACKERS[score.attacker].label}" + (f" [{rep}]" if multi_rep else "")
                    record[name] = score.auc
                    if intervals:
                        est = score.metrics["AUC"]
                        record[f"{name} 95% interval"] = f"[{est.low:.3f}, {est.high:.3f}]"
            records.append(record)
        return pd.DataFrame(records)


def representations_of(table: torch.Tensor, model: Recommender | None) -> dict[str, torch.Tensor]:
    """Every representation served with this table (see `served_representations`), on the model's device."""
    return served_representations(model, table.to(model.device) if model is not None else table)


def mean_jaccard(before: np.ndarray, after: np.ndarray) -> float:
    """Mean over users of |A ∩ B| / |A ∪ B| for two top-k lists per user (vectorised)."""
    k = before.shape[1]
    matches = (before[:, :, None] == after[:, None, :]).any(2).sum(1)
    return float(np.mean(matches / (2 * k - matches)))


def evaluate_unlearning(
    original_table: torch.Tensor,
    results: Sequence[UnlearningResult],
    labels: Mapping[str, AttributeLabels],
    model: Recommender | None = None,
    split: Split | None = None,
    attackers: Sequence[str] = DEFAULT_ATTACKERS,
    protocol: Protocol = CrossValidation(),
    ks: tuple[int, ...] = (5, 10, 20),
    n_permutations: int = 0,
    seed: int = 0,
    progress: Progress | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    device: torch.device | str = "cpu",
) -> Comparison:
    """Compare the original table with each result on leakage (every default attacker, every representation,
    verdicts against `tolerance`), ranking quality, top-20 stability and runtime."""
    device = canonical(device)
    original_table = torch.as_tensor(original_table, dtype=torch.float32)
    original_top = None
    if model is not None and split is not None:
        original_top = top_k_items(model.scorer(original_table.to(model.device)), split, 20, device=device)
    entries = [("Original", "original", original_table, model, 0.0, None)]
    entries += [(r.label, r.method, r.table, r.model or model, r.seconds, r) for r in results]
    rows = []
    for i, (label, method, table, row_model, seconds, result) in enumerate(entries):
        def scaled(fraction, message, i=i, label=label):
            if progress is not None:
                progress((i + fraction) / len(entries), f"{label}: {message}")
        audits = {}
        reps = representations_of(table, row_model)
        for j, (rep, values) in enumerate(reps.items()):
            audits[rep] = run_audit(values, labels, attackers=attackers, protocol=protocol,
                                    n_permutations=n_permutations, seed=seed, representation_name=rep,
                                    progress=lambda f, m, j=j: scaled((j + f) / len(reps), m), tolerance=tolerance,
                                    n_representations=len(reps), device=device)
        ranking = jaccard = None
        if row_model is not None and split is not None:
            scorer = row_model.scorer(table.to(row_model.device))
            ranking = evaluate_full(scorer, split, "test", ks=ks, device=device)
            jaccard = mean_jaccard(original_top, top_k_items(scorer, split, 20, device=device))
        rows.append(MethodEvaluation(label, method, audits, ranking, jaccard, seconds, result))
    return Comparison(tuple(rows))


def tradeoff_sweep(
    name: str,
    weights: Sequence[float],
    table: torch.Tensor,
    labels: Mapping[str, AttributeLabels],
    model: Recommender | None = None,
    split: Split | None = None,
    attackers: Sequence[str] = DEFAULT_ATTACKERS,
    protocol: Protocol = CrossValidation(n_repeats=1),
    params: dict | None = None,
    progress: Progress | None = None,
    device: torch.device | str = "cpu",
) -> pd.DataFrame:
    """Attacker AUC and NDCG@20 over a sweep of a method's trade-off weight (the privacy-utility curve)."""
    field = UNLEARNERS[name].tradeoff_field
    if field is None:
        raise ValueError(f"{UNLEARNERS[name].label} has no trade-off weight to sweep")
    rows = []
    for i, weight in enumerate(weights):
        if progress is not None:
            progress(i / len(weights), f"{field} = {weight:g}")
        fixed = {"target_gap": 0.0} if "target_gap" in {f.name for f in fields(UNLEARNERS[name])} else {}
        result = make_unlearner(name, **{**(params or {}), **fixed, field: weight}).fit_transform(
            table, labels, model, split, device=device)
        row_model = result.model or model
        ndcg = float("nan")
        if row_model is not None and split is not None:
            ndcg = evaluate_full(row_model.scorer(result.table.to(row_model.device)), split, "test", ks=(20,),
                                 device=device)["NDCG@20"]
        audit = run_audit(result.table, labels, attackers=attackers, protocol=protocol, n_permutations=0, device=device)
        for score in audit.scores:
            rows.append({"weight": weight, "attribute": score.attribute, "attacker": ATTACKERS[score.attacker].label,
                         "AUC": score.auc, "NDCG@20": ndcg})
    if progress is not None:
        progress(1.0, "sweep done")
    return pd.DataFrame(rows)
