"""The one deletion comparison used by the Deletion page, the CLI, the tests and the bench.

`run_deletion` runs Retrain (always: it is the reference) and the chosen methods on the same device in this process,
timing each update alone; `evaluate_deletion` scans the original model and every updated one once each
(completeness.scan: accuracy and completeness from the same scores) and judges each method's completeness against
Retrain's with a stated tolerance:
- under-forgets: forgotten-vs-retained AUC more than `auc` below Retrain's, or forget hit rate@20 more than
  `hit_rate` above it, or membership-inference AUC more than `mia` above it;
- over-forgets: forgotten-vs-retained AUC more than `over_auc` above Retrain's (forgotten items pushed further down
  than a model that never saw them would put them, which also harms those users);
- otherwise matches Retrain. Accuracy is shown beside it (NDCG@20 relative to Retrain's) but is not part of it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ...device import canonical, describe
from ...evaluation import mean_jaccard
from ...models import Recommender
from ...progress import Progress, scaled
from ...training import TrainConfig
from .base import DeletionMethod, DeletionResult
from .completeness import TOP_K, Probe, Scan, completeness, make_probe, scan
from .request import ForgetRequest
from .retrain import Retrain

REFERENCE, MATCHES, UNDER, OVER = "reference", "matches Retrain", "under-forgets", "over-forgets"
PASSING = (REFERENCE, MATCHES)


@dataclass(frozen=True)
class Tolerance:
    """How far from Retrain's completeness a method may be and still match it."""

    auc: float = 0.05  # forgotten-vs-retained AUC below Retrain's
    hit_rate: float = 0.02  # forget hit rate@20 above Retrain's
    mia: float = 0.05  # membership-inference AUC above Retrain's
    over_auc: float = 0.10  # forgotten-vs-retained AUC above Retrain's (over-forgetting)

    def describe(self) -> str:
        return (f"matches Retrain when its forgotten-vs-retained AUC is within −{self.auc:.2f}/+{self.over_auc:.2f} "
                f"of Retrain's, its forget hit rate@{TOP_K} at most {self.hit_rate:.2f} above Retrain's and its "
                f"membership-inference AUC at most {self.mia:.2f} above Retrain's")


@dataclass(frozen=True)
class DeletionRow:
    """One row of the comparison: a method's (or the original model's) cost, accuracy, completeness, verdict."""

    label: str
    method: str  # "original" for the model before deletion
    seconds: float
    speedup: float
    accuracy: dict[str, float]
    completeness: dict[str, float]
    verdict: str
    why: str
    result: DeletionResult | None = field(default=None, repr=False)
    scan: Scan | None = field(default=None, repr=False)

    @property
    def model(self) -> Recommender | None:
        return None if self.result is None else self.result.model


@dataclass(frozen=True)
class DeletionReport:
    request: str
    tolerance: Tolerance
    device: str
    rows: tuple[DeletionRow, ...]

    def row(self, method: str) -> DeletionRow:
        return next(r for r in self.rows if r.method == method)

    def to_frame(self) -> pd.DataFrame:
        """The side-by-side table (the CLI's JSON report has one object per row, keyed by these columns)."""
        retrain_ndcg = self.row("retrain").accuracy["NDCG@20"]
        records = []
        for row in self.rows:
            records.append({
                "method": row.label, "verdict": row.verdict, "seconds": row.seconds,
                "speed-up vs Retrain": row.speedup, **row.accuracy,
                "NDCG@20 / Retrain's": row.accuracy["NDCG@20"] / retrain_ndcg if retrain_ndcg else float("nan"),
                **row.completeness, "why": row.why, "device": self.device,
                "notes": "" if row.result is None else row.result.notes,
            })
        return pd.DataFrame(records)

    def to_records(self) -> list[dict]:
        frame = self.to_frame()
        return [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()}
                for r in frame.to_dict("records")]


def judge(values: dict[str, float], reference: dict[str, float], tolerance: Tolerance) -> tuple[str, str]:
    """The verdict and the reason, comparing completeness `values` with Retrain's."""
    auc_, ref_auc = values["forgotten-vs-retained AUC"], reference["forgotten-vs-retained AUC"]
    hit, ref_hit = values[f"forget HR@{TOP_K}"], reference[f"forget HR@{TOP_K}"]
    mia, ref_mia = values["MIA AUC"], reference["MIA AUC"]
    reasons = []
    if auc_ < ref_auc - tolerance.auc:
        reasons.append(f"AUC {auc_:.3f} < Retrain's {ref_auc:.3f} − {tolerance.auc:.2f}")
    if hit > ref_hit + tolerance.hit_rate:
        reasons.append(f"forget HR@{TOP_K} {hit:.3f} > Retrain's {ref_hit:.3f} + {tolerance.hit_rate:.2f}")
    if np.isfinite(mia) and np.isfinite(ref_mia) and mia > ref_mia + tolerance.mia:
        reasons.append(f"MIA AUC {mia:.3f} > Retrain's {ref_mia:.3f} + {tolerance.mia:.2f}")
    if reasons:
        return UNDER, "; ".join(reasons)
    if auc_ > ref_auc + tolerance.over_auc:
        return OVER, f"AUC {auc_:.3f} > Retrain's {ref_auc:.3f} + {tolerance.over_auc:.2f}"
    return MATCHES, "within tolerance of Retrain"


def evaluate_deletion(model: Recommender, request: ForgetRequest, results: Sequence[DeletionResult],
                      tolerance: Tolerance = Tolerance(), probe: Probe | None = None, seed: int = 0,
                      progress: Progress | None = None, device: torch.device | str | None = None) -> DeletionReport:
    """Scan the original model and each result once; one row each, judged against the Retrain result."""
    retrain = next((r for r in results if r.method == Retrain.name), None)
    if retrain is None:
        raise ValueError("the comparison needs a Retrain result: it is the reference for every completeness figure")
    probe = probe or make_probe(request, seed)
    entries = [("Original", "original", model, None)] + [(r.label, r.method, r.model, r) for r in results]
    scans = []
    for i, (label, _, row_model, _) in enumerate(entries):
        if progress is not None:
            progress(i / len(entries), f"evaluating {label}")
        scans.append(scan(row_model, request, probe, device=device))
    reference_index = 1 + list(results).index(retrain)
    reference = completeness(scans[reference_index], seed)
    rows = []
    for (label, method, _, result), scanned in zip(entries, scans):
        values = completeness(scanned, seed) if scanned is not scans[reference_index] else dict(reference)
        values[f"Jaccard@{TOP_K} vs Retrain"] = mean_jaccard(scanned.top_k, scans[reference_index].top_k)
        verdict, why = (REFERENCE, "the reference") if result is retrain else judge(values, reference, tolerance)
        seconds = 0.0 if result is None else result.seconds
        speedup = float("nan") if result is None else retrain.seconds / max(seconds, 1e-9)
        accuracy = {k: scanned.ranking.metrics[k] for k in ("NDCG@20", "NDCG@50", "HR@20", "Recall@20")}
        rows.append(DeletionRow(label, method, seconds, speedup, accuracy, values, verdict, why, result, scanned))
    if progress is not None:
        progress(1.0, "evaluated")
    return DeletionReport(request.summary(), tolerance, describe(canonical(device) if device else model.device),
                          tuple(rows))


def run_methods(model: Recommender, request: ForgetRequest, methods: Sequence[DeletionMethod],
                progress: Progress | None = None, device: torch.device | str = "cpu",
                train_config: TrainConfig | None = None, shards: np.ndarray | None = None) -> list[DeletionResult]:
    """Run Retrain (first, whether chosen or not) and every chosen method that applies to the model."""
    methods = list(methods)
    if not any(isinstance(m, Retrain) for m in methods):
        methods.insert(0, Retrain())
    methods.sort(key=lambda m: not isinstance(m, Retrain))
    results = []
    for i, method in enumerate(methods):
        part = scaled(progress, i / len(methods), (i + 1) / len(methods), f"{method.label}: ")
        results.append(method.unlearn(model, request.split, request, progress=part, device=device,
                                      train_config=train_config, shards=shards))
    return results


def run_deletion(model: Recommender, request: ForgetRequest, methods: Sequence[DeletionMethod],
                 progress: Progress | None = None, device: torch.device | str = "cpu",
                 train_config: TrainConfig | None = None, shards: np.ndarray | None = None,
                 tolerance: Tolerance = Tolerance(), seed: int = 0) -> DeletionReport:
    """Run the methods (Retrain included), then the comparison: the page, the CLI and the bench call this."""
    device = canonical(device)
    results = run_methods(model, request, methods, scaled(progress, 0.0, 0.85), device, train_config, shards)
    return evaluate_deletion(model, request, results, tolerance, seed=seed, progress=scaled(progress, 0.85, 1.0),
                             device=device)
