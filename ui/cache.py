"""Per-process resources and cached calls into core.

The compute device and the LEGO-style calibration cache are chosen here once per server process
(`st.cache_resource`) and passed explicitly to every core call; nothing below picks them up by itself. Long
computations are kept in bounded per-process stores rather than inside `st.cache_*` functions, because Streamlit
cannot replay the progress-bar updates made inside a cached function.
"""
from __future__ import annotations

import hashlib
import threading
from typing import TYPE_CHECKING, Mapping

import numpy as np
import pandas as pd
import streamlit as st
import torch

from core.audit import AuditResult, Protocol, audit_model, run_audit
from core.checkpoint import load_model
from core.data import MIN_INTERACTIONS, AttributeLabels, InteractionDataset, Split, split_per_user
from core.device import get_device
from core.evaluation import Comparison, evaluate_unlearning, tradeoff_sweep
from core.metrics import evaluate_full
from core.models import MODEL_INFO
from core.runstore import RunStore, open_store
from core.training import TrainConfig, TrainResult, train_model
from core.unlearning.attribute import CalibrationCache, UnlearningResult, make_unlearner
from core.uploads import UploadedEmbeddings, prepare_upload
from core.views import umap_2d

from .data import load_source
from .state import ActiveModel

if TYPE_CHECKING:
    from .targets import AuditTarget, UnlearningSubject

# ---------------------------------------------------------------------------------------------- resources


@st.cache_resource(show_spinner=False)
def compute_device() -> torch.device:
    """The device every computation of this server process runs on: the one call to `get_device` in the app
    (CUDA when present, else the CPU; PRIVACY_AUDIT_DEVICE overrides)."""
    return get_device()


@st.cache_resource(show_spinner=False)
def run_store() -> RunStore:
    """The run history every page records into, one connection per server process ($PRIVACY_AUDIT_RUNS, else
    data/runs/runs.sqlite); runs left running by a previous, killed server show as interrupted."""
    return open_store()


@st.cache_resource(show_spinner=False)
def calibration_cache() -> CalibrationCache:
    """LEGO-style's per-attribute calibrations, one cache per server process, shared by every session."""
    return CalibrationCache()


@st.cache_resource(show_spinner=False)
def _store(name: str) -> tuple[dict, threading.Lock]:
    """A per-process dictionary of computed results (models, audits, unlearning runs), one per `name`, with the
    lock that guards it: Streamlit serves every browser session on its own thread."""
    return {}, threading.Lock()


def _remember(name: str, key, compute, max_entries: int):
    """`compute()` once per key in the store `name`, the oldest entry dropped past `max_entries`. The computation
    runs outside the lock (it can take minutes); two sessions asking at once may both compute, and one result is
    kept."""
    store, lock = _store(name)
    with lock:
        if key in store:
            return store[key]
    value = compute()
    with lock:
        while len(store) >= max_entries:
            store.pop(next(iter(store)))
        return store.setdefault(key, value)


def digest(*arrays) -> str:
    """A short content hash of arrays, for cache keys."""
    hasher = hashlib.sha1()
    for array in arrays:
        hasher.update(np.ascontiguousarray(array).tobytes())
    return hasher.hexdigest()[:16]


def labels_key(labels: Mapping[str, AttributeLabels]) -> tuple:
    """What identifies encoded labels in a cache key: name, type, classes and the codes themselves."""
    return tuple((n, l.kind, l.classes, digest(l.codes, l.mask)) for n, l in labels.items())


# ---------------------------------------------------------------------------------------------- data and models


@st.cache_resource(show_spinner="Loading data…", max_entries=8)
def cached_dataset(source: str, folder: str = "", interactions: tuple[str, bytes] | None = None,
                   attributes: tuple[str, bytes] | None = None, threshold: float | None = None,
                   k: int = MIN_INTERACTIONS) -> InteractionDataset:
    """Load (once per distinct input, k-core threshold included) the dataset the user chose."""
    return load_source(source, folder, interactions, attributes, threshold, k)


@st.cache_resource(show_spinner=False, max_entries=4)
def cached_split(_dataset: InteractionDataset, fingerprint: str, seed: int = 0) -> Split:
    return split_per_user(_dataset, seed=seed)


def cached_training(split: Split, fingerprint: str, kind: str, config: TrainConfig, progress=None) -> TrainResult:
    """Train once per (dataset, model, config, device) with live progress; a rerun reuses the trained model."""
    device = compute_device()
    return _remember("trained", (fingerprint, kind, config, str(device)),
                     lambda: train_model(kind, split, config, progress=progress, device=device), max_entries=6)


def trained_model(dataset: InteractionDataset, split: Split, result: TrainResult) -> ActiveModel:
    return ActiveModel(dataset, split, result.model, result.test,
                       f"trained {result.model.label} ({result.epochs_run} epochs, best {result.best_epoch})",
                       result.seconds)


def loaded_model(dataset: InteractionDataset, split: Split, folder: str) -> ActiveModel:
    """A saved model for this dataset on the compute device, with its test quality (refused with a clear
    message when it does not match the dataset)."""
    device = compute_device()
    model, meta = load_model(folder, dataset, train_pairs=split.train, device=device)
    test = evaluate_full(model.scorer(), split, "test", device=device)
    return ActiveModel(dataset, split, model, test, f"loaded {MODEL_INFO[meta['model']].label} from {folder}")


# ---------------------------------------------------------------------------------------------- audits


@st.cache_data(show_spinner="Checking the files…", max_entries=8)
def cached_upload(embeddings: tuple[str, bytes], attributes: tuple[str, bytes],
                  match_by_position: bool = False) -> UploadedEmbeddings:
    return prepare_upload(embeddings[1], attributes[1], embeddings[0], attributes[0],
                          match_by_position=match_by_position)


def in_sequence(progress, n_parts: int):
    """A progress callback for `n_parts` sub-tasks that each report 0 → 1 in turn (as `audit_model` does for each
    representation): a fraction lower than the previous one starts the next part."""
    if progress is None:
        return None
    state = {"part": 0, "last": 0.0}

    def report(fraction: float, message: str) -> None:
        if fraction < state["last"] - 1e-9:
            state["part"] = min(n_parts - 1, state["part"] + 1)
        state["last"] = fraction
        progress((state["part"] + fraction) / n_parts, message)
    return report


def cached_audit(target: AuditTarget, labels: Mapping[str, AttributeLabels], attackers: tuple[str, ...],
                 protocol: Protocol, tolerance: float, progress=None) -> dict[str, AuditResult]:
    """Audit every representation of the target once per setting: for a model, every representation it serves
    with (`audit_model`, p-values corrected over them); for uploaded embeddings, the table."""
    device = compute_device()
    options = dict(attackers=attackers, protocol=protocol, tolerance=tolerance, device=device)

    def compute() -> dict[str, AuditResult]:
        if target.active is not None:
            return audit_model(target.active.model, labels, progress=in_sequence(progress, len(target.tables)),
                               **options)
        name, table = next(iter(target.tables.items()))
        return {name: run_audit(table, labels, progress=progress, representation_name=name, **options)}

    key = (target.key, labels_key(labels), attackers, protocol, float(tolerance), str(device))
    return _remember("audits", key, compute, max_entries=16)


# ---------------------------------------------------------------------------------------------- unlearning


def cached_unlearning(subject: UnlearningSubject, name: str, params: dict, labels: Mapping[str, AttributeLabels],
                      progress=None) -> UnlearningResult:
    """Run a method once per (table, attributes, parameters) on the compute device, with the process's
    calibration cache; a page rerun reuses the result."""
    device = compute_device()
    active = subject.active

    def compute() -> UnlearningResult:
        return make_unlearner(name, **params).fit_transform(
            torch.as_tensor(subject.table), labels, active.model if active else None,
            active.split if active else None, progress=progress, device=device, cache=calibration_cache())

    key = (subject.key, name, tuple(sorted(params.items())), labels_key(labels), str(device))
    return _remember("unlearning", key, compute, max_entries=32)


def cached_evaluation(subject: UnlearningSubject, results: list[UnlearningResult],
                      labels: Mapping[str, AttributeLabels], attackers: tuple[str, ...], protocol: Protocol,
                      tolerance: float, progress=None) -> Comparison:
    """The before/after comparison of `results` with the original table (each row evaluated once, then reused)."""
    device = compute_device()
    active = subject.active
    entries = [None, *results]
    rows = []
    for i, result in enumerate(entries):
        method = "original" if result is None else (result.method, tuple(sorted(result.params.items())))

        def scaled(fraction, message, i=i):
            if progress is not None:
                progress((i + fraction) / len(entries), message)

        def compute(result=result, scaled=scaled):
            comparison = evaluate_unlearning(
                torch.as_tensor(subject.table), [] if result is None else [result], labels,
                active.model if active else None, active.split if active else None, attackers=attackers,
                protocol=protocol, progress=scaled, tolerance=tolerance, device=device)
            return comparison.rows[-1]

        key = (subject.key, method, labels_key(labels), attackers, protocol, float(tolerance), str(device))
        rows.append(_remember("evaluations", key, compute, max_entries=64))
    return Comparison(tuple(rows))


def run_sweep(subject: UnlearningSubject, name: str, weights: list[float], labels: Mapping[str, AttributeLabels],
              params: dict, attackers: tuple[str, ...], progress=None) -> pd.DataFrame:
    """Attacker AUC and NDCG@20 over a sweep of the method's trade-off weight (fixed strength, no target)."""
    active = subject.active
    return tradeoff_sweep(name, weights, torch.as_tensor(subject.table), labels, active.model if active else None,
                          active.split if active else None, attackers=attackers, params=params, progress=progress,
                          device=compute_device())


@st.cache_data(show_spinner="Projecting with UMAP…", max_entries=8)
def cached_umap(table: np.ndarray, max_users: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    return umap_2d(table, max_users=max_users)
