"""What a run records: result objects (TrainResult, AuditResult, MethodEvaluation) turned into the run store's
fields (flat metrics, verdicts in words, result tables, artifacts), and `recorded`, which keeps a run's status
honest (running -> finished / failed / cancelled) around any computation. The CLI, the job runner and the pages all
record through here, so a run looks the same wherever it came from.

A deletion run (`python -m core forget`, the Deletion page) records the same way: `deletion_start` (the request in
counts, never the forgotten ids), then `deletion_fields` (metrics, per-method verdicts, the comparison table).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Mapping

import numpy as np
import pandas as pd

from .runstore import RunStore

if TYPE_CHECKING:
    from .audit import AttributeVerdict, AuditResult
    from .data import InteractionDataset
    from .evaluation import MethodEvaluation
    from .metrics import RankingResult
    from .training import TrainResult
    from .unlearning.deletion import DeletionReport, ForgetRequest

RANKING_PROTOCOL = ("full ranking over all items, training and validation items masked, per-user 80/10/10 split of "
                    "each user's interactions")


class Cancelled(Exception):
    """Raised inside a computation when its user asked to stop (see core.jobs): the run is recorded cancelled."""


def frame_records(frame: pd.DataFrame) -> list[dict]:
    """A frame as JSON-ready records (NaN -> None), the form result tables take in the store and in reports."""
    return [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}
            for row in frame.to_dict(orient="records")]


def dataset_fields(dataset: InteractionDataset | None) -> dict:
    """The start fields that say what data a run worked on."""
    if dataset is None:
        return {}
    return {"dataset": dataset.name, "fingerprint": dataset.fingerprint}


# ---------------------------------------------------------------------------------------------- training


def training_fields(result: TrainResult) -> dict:
    """Finish fields of a training run: test and validation quality, the epoch history, the runtime and device."""
    metrics = {**result.test.metrics, **{f"valid {k}": v for k, v in result.valid.metrics.items()},
               "best epoch": result.best_epoch, "epochs run": result.epochs_run}
    tables = {"test quality": frame_records(result.test.to_frame()),
              "validation quality": frame_records(result.valid.to_frame()),
              "training history": frame_records(pd.DataFrame(result.history))}
    notes = [f"best validation NDCG@20 at epoch {result.best_epoch} of {result.epochs_run} (early stopping on "
             "validation, never on test)"]
    return {"metrics": metrics, "seconds": result.seconds, "device": result.device,
            "results": {"protocol": RANKING_PROTOCOL, "tables": tables, "notes": notes}}


def training_params(kind: str, config, spec: str | None = None) -> dict:
    from dataclasses import asdict

    return {"model": kind, **asdict(config), **({"data": spec} if spec else {})}


def save_trained(store: RunStore, run_id: str, result: TrainResult, dataset: InteractionDataset, **saving) -> None:
    """Keep the trained model with its run (weights.safetensors + model.json, `saving` passed to `save_model`),
    so History can reopen it."""
    from .checkpoint import save_model

    save_model(store.run_folder(run_id), result, dataset, **saving)
    store.seal(run_id)


# ---------------------------------------------------------------------------------------------- audits


def verdict_fields(verdicts: Mapping[str, AttributeVerdict]) -> dict:
    """Per attribute, the verdict as the store keeps it: status, AUC with its interval, gap, p-value, words."""
    from .audit import ATTACKERS

    return {name: {"status": v.status, "auc": v.auc, "auc_low": v.auc_low, "auc_high": v.auc_high,
                   "gap": v.leakage, "tolerance": v.tolerance, "p_value": v.p_value,
                   "attacker": ATTACKERS[v.attacker].label if v.attacker in ATTACKERS else v.attacker,
                   "representation": v.representation, "users": v.n_users, "explanation": v.explanation}
            for name, v in verdicts.items()}


def _leakage_metrics(verdicts: Mapping[str, AttributeVerdict]) -> dict:
    metrics = {}
    for name, v in verdicts.items():
        metrics[f"AUC {name}"], metrics[f"AUC {name} low"], metrics[f"AUC {name} high"] = v.auc, v.auc_low, v.auc_high
        metrics[f"|AUC − 0.5| {name}"] = v.leakage
    metrics["worst |AUC − 0.5|"] = max((v.leakage for v in verdicts.values()), default=float("nan"))
    return metrics


def audit_fields(audits: Mapping[str, AuditResult], ranking: RankingResult | None = None) -> dict:
    """Finish fields of an audit: each attribute's headline (strongest attacker on the representation that leaks
    most) with its interval, every attack with its intervals, the model's test NDCG@20 when there is a model."""
    from .audit import worst_verdicts

    verdicts = worst_verdicts(audits)
    metrics = _leakage_metrics(verdicts)
    if ranking is not None:
        metrics["NDCG@20"] = ranking.metrics.get("NDCG@20")
    attacks = pd.concat([a.to_frame() for a in audits.values()], ignore_index=True)
    first = next(iter(audits.values()))
    notes = [f"{name}: {note}" for name, a in audits.items() for note in a.notes]
    return {"metrics": metrics, "verdicts": verdict_fields(verdicts),
            "seconds": sum(a.seconds for a in audits.values()),
            "results": {"protocol": f"{first.protocol}; {first.n_users} users × {first.dim} dimensions; p-values "
                                    f"corrected over {len(audits)} representation(s)",
                        "tables": {"attacks": frame_records(attacks)}, "notes": notes},
            "artifacts": {"attacks.parquet": attacks}}


def audit_params(attackers, protocol, tolerance: float, **more) -> dict:
    return {"attackers": list(attackers), "protocol": getattr(protocol, "label", str(protocol)),
            "tolerance": float(tolerance), **more}


# ---------------------------------------------------------------------------------------------- unlearning


def unlearning_fields(row: MethodEvaluation, original: MethodEvaluation | None = None) -> dict:
    """Finish fields of one unlearning method's run: leakage after (with intervals) and, when the original is
    given, before; ranking quality after and before; the edited table as an artifact."""
    from .evaluation import Comparison

    metrics = _leakage_metrics(row.verdicts)
    if row.ranking is not None:
        metrics.update({k: v for k, v in row.ranking.metrics.items() if k.startswith(("NDCG", "HR"))})
    metrics["top-20 Jaccard"] = row.top_k_jaccard
    if original is not None:
        before = _leakage_metrics(original.verdicts)
        metrics["worst |AUC − 0.5| before"] = before["worst |AUC − 0.5|"]
        if original.ranking is not None:
            metrics["NDCG@20 before"] = original.ranking.metrics.get("NDCG@20")
    result = row.result
    details = {k: v for k, v in (result.details if result else {}).items() if k != "log"}
    if result is not None and "target_gap" in details:
        metrics["target"], metrics["target reached"] = details["target_gap"], float(bool(details.get("reached")))
    rows = (original, row) if original is not None else (row,)
    attacks = pd.concat([a.to_frame() for a in row.audits.values()], ignore_index=True)
    notes = [result.notes] if result is not None and result.notes else []
    fields = {"metrics": metrics, "verdicts": verdict_fields(row.verdicts),
              "seconds": result.seconds if result is not None else row.seconds,
              "results": {"protocol": next(iter(row.audits.values())).protocol + "; " + RANKING_PROTOCOL,
                          "tables": {"before and after": frame_records(Comparison(rows).to_frame()),
                                     "attacks after": frame_records(attacks)},
                          "notes": notes, "details": details}}
    if result is not None:
        fields["artifacts"] = {"user_table.npy": result.table.detach().cpu().numpy()}
        fields["device"] = result.device
    return fields


# ---------------------------------------------------------------------------------------------- deletion


def request_fields(request: ForgetRequest) -> dict:
    """What a deletion run keeps of its request: its kind and how much it forgets, in counts only. Never the ids:
    the history must not become a list of the people who asked to be forgotten."""
    return {"kind": request.kind, "description": request.description, "interactions": int(request.n_pairs),
            "users affected": int(len(request.affected_users)), "items affected": int(len(request.affected_items)),
            "whole users": int(len(request.users)), "whole items": int(len(request.items)), "seed": int(request.seed)}


def deletion_start(request: ForgetRequest, methods, tolerance, model: str, device, dataset: InteractionDataset,
                   source: str, **more) -> dict:
    """Start fields of a deletion run (page and CLI alike): data, model, the request in counts, every method that
    runs (Retrain first: it is the reference) with its hyper-parameters, the tolerance of the verdicts."""
    from dataclasses import asdict

    from .unlearning.deletion import Retrain

    methods = list(methods)
    ran = ([] if any(isinstance(m, Retrain) for m in methods) else [Retrain()]) + methods
    ran.sort(key=lambda m: not isinstance(m, Retrain))
    params = {"request": request_fields(request), "methods": [m.name for m in ran],
              "method params": {m.name: m.params for m in ran}, "tolerance": asdict(tolerance), **more}
    return {"kind": "deletion", "label": f"forget {request.description}: " + ", ".join(m.label for m in ran),
            "model": model, "device": str(device), "params": params, "source": source, **dataset_fields(dataset)}


def deletion_verdicts(report: DeletionReport) -> dict:
    """Per method (Retrain only when it is the one method), its verdict against Retrain and why, in words."""
    from .unlearning.deletion.completeness import TOP_K
    from .unlearning.deletion.evaluation import REFERENCE

    reference = report.row("retrain")
    rows = [r for r in report.rows if r.method != "original" and r.verdict != REFERENCE] or [reference]
    verdicts = {}
    for row in rows:
        c, ref = row.completeness, reference.completeness
        ratio = row.accuracy["NDCG@20"] / reference.accuracy["NDCG@20"] if reference.accuracy["NDCG@20"] else None
        verdicts[row.label] = {
            "status": row.verdict,
            "explanation": (f"{row.label} {row.verdict} ({row.why}): forgotten-vs-retained AUC "
                            f"{c['forgotten-vs-retained AUC']:.3f} (Retrain {ref['forgotten-vs-retained AUC']:.3f}), "
                            f"forget HR@{TOP_K} {c[f'forget HR@{TOP_K}']:.3f} (Retrain {ref[f'forget HR@{TOP_K}']:.3f}"
                            f"), MIA AUC {c['MIA AUC']:.3f} (Retrain {ref['MIA AUC']:.3f}); NDCG@20 "
                            + (f"{ratio:.3f} of Retrain's" if ratio is not None else "–")
                            + f"; {row.seconds:.2f} s, {row.speedup:.1f}× Retrain's speed."),
        }
    return verdicts


def deletion_fields(report: DeletionReport, seconds: float) -> dict:
    """Finish fields of a deletion run: every row's accuracy, completeness and cost as '<method>: <measure>'
    metrics, the verdicts, the comparison table (also as comparison.parquet); `seconds` is the whole run's wall
    time (updates and evaluation)."""
    frame = report.to_frame()
    metrics = {}
    for row in report.rows:
        values = {**row.accuracy, **row.completeness}
        if row.method != "original":
            values.update({"seconds": row.seconds, "speed-up vs Retrain": row.speedup})
        metrics.update({f"{row.label}: {name}": value for name, value in values.items()})
    return {"metrics": metrics, "verdicts": deletion_verdicts(report), "seconds": float(seconds),
            "device": report.device,
            "results": {"protocol": f"{report.request}; verdicts: {report.tolerance.describe()}; seconds are each "
                                    "update alone, measured in this process; " + RANKING_PROTOCOL,
                        "tables": {"comparison": frame_records(frame)},
                        "notes": [f"{r.label}: {r.result.notes}" for r in report.rows
                                  if r.result is not None and r.result.notes]},
            "artifacts": {"comparison.parquet": frame}}


# ---------------------------------------------------------------------------------------------- status


@dataclass
class Recording:
    """A run being recorded: `finish(**fields)` says how it ended; left unset, it is recorded finished as is."""

    store: RunStore
    run_id: str
    fields: dict = field(default_factory=dict)

    def finish(self, **fields) -> None:
        self.fields.update(fields)


@contextmanager
def recorded(store: RunStore | None, kind: str, label: str, **start) -> Iterator[Recording | None]:
    """Record the block as one run: "running" at once, then finished with the fields given to `finish`, failed
    with the error, or cancelled (Cancelled, Ctrl-C). With no store, records nothing."""
    if store is None:
        yield None
        return
    recording = Recording(store, store.start(kind, label, **start))
    try:
        yield recording
    except (Cancelled, KeyboardInterrupt):
        store.fail(recording.run_id, "cancelled by the user", status="cancelled")
        raise
    except BaseException as error:
        store.fail(recording.run_id, f"{type(error).__name__}: {error}")
        raise
    store.finish(recording.run_id, **recording.fields)
