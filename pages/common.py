"""Shared UI pieces for the pages: session-state keys in one place, cached loaders and trainers, small widgets.

Pages stay thin: they collect inputs, call these helpers (which call `core`), and draw.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st
import torch

from core.checkpoint import load_model, save_model
from core.data import DataError, InteractionDataset, Split, load_dataset, load_interactions_csv, split_per_user
from core.device import describe, get_device
from core.metrics import RankingResult, evaluate_full
from core.models import MODEL_INFO, Recommender
from core.training import TrainConfig, TrainResult, train_model


class Keys:
    """Every st.session_state key the pages share, defined once."""

    DATA_SOURCE = "data_source"  # (kind, detail) of the loaded dataset
    UPLOAD_INTERACTIONS = "upload_interactions"  # (file name, bytes) of an uploaded interactions CSV
    UPLOAD_ATTRIBUTES = "upload_attributes"  # (file name, bytes) of an uploaded attributes CSV, or None
    ACTIVE = "active_model"  # the ActiveModel the other pages work on
    UPLOADED_EMBEDDINGS = "uploaded_embeddings"  # an audit/unlearning target uploaded instead of a model
    AUDIT_RESULTS = "audit_results"
    UNLEARNING_RUNS = "unlearning_runs"
    RUN_STORE = "run_store"


@dataclass(frozen=True)
class ActiveModel:
    """The model the dashboard is working on, with its data and its quality on the test split."""

    dataset: InteractionDataset
    split: Split
    model: Recommender
    test: RankingResult
    origin: str  # "trained …" or "loaded from …"
    seconds: float | None = None


DEMO = "Built-in demo"
MOVIELENS = "MovieLens-100K folder"
UPLOAD = "Upload interactions CSV"
DATA_SOURCES = (DEMO, MOVIELENS, UPLOAD)


@st.cache_resource(show_spinner="Loading data…", max_entries=8)
def cached_dataset(source: str, folder: str = "", interactions: tuple[str, bytes] | None = None,
                   attributes: tuple[str, bytes] | None = None, threshold: float | None = None) -> InteractionDataset:
    """Load (once per distinct input) the dataset the user chose."""
    return load_source(source, folder, interactions, attributes, threshold)


def load_source(source: str, folder: str = "", interactions: tuple[str, bytes] | None = None,
                attributes: tuple[str, bytes] | None = None, threshold: float | None = None) -> InteractionDataset:
    """Turn the Model page's data choice into a dataset; raises DataError with a message for the user."""
    if source == DEMO:
        return load_dataset("synthetic")
    if source == MOVIELENS:
        if not folder or not (Path(folder) / "u.data").exists():
            raise DataError(f"{folder or 'no folder given'}: expected a MovieLens-100K folder containing u.data "
                            "and u.user (download it from grouplens.org/datasets/movielens/100k)")
        return load_dataset(f"ml-100k:{folder}", rating_threshold=threshold)
    if interactions is None:
        raise DataError("upload an interactions CSV (columns user, item, optionally rating and timestamp) first")
    name, raw = interactions
    attr_raw, attr_name = (attributes[1], attributes[0]) if attributes else (None, None)
    return load_interactions_csv(raw, attr_raw, name=Path(name).stem, rating_threshold=threshold,
                                 file_label=name, attributes_label=attr_name)


@st.cache_resource(show_spinner=False, max_entries=4)
def cached_split(_dataset: InteractionDataset, fingerprint: str, seed: int = 0) -> Split:
    return split_per_user(_dataset, seed=seed)


@st.cache_resource(show_spinner=False)
def _trained_models() -> dict:
    """One store of trained models per server process (a cache_resource singleton)."""
    return {}


def cached_training(split: Split, fingerprint: str, kind: str, config: TrainConfig, progress=None) -> TrainResult:
    """Train once per (dataset, model, config) with live progress; a page rerun reuses the trained model.

    Not an st.cache_resource function itself: Streamlit cannot replay progress-bar updates made inside one.
    """
    store = _trained_models()
    key = (fingerprint, kind, config)
    if key not in store:
        if len(store) >= 6:  # bound memory: forget the oldest model
            store.pop(next(iter(store)))
        store[key] = train_model(kind, split, config, progress=progress, device=get_device())
    return store[key]


def progress_callback(bar) -> callable:
    """Adapt core's progress(fraction, message) to an st.progress bar."""
    return lambda fraction, message: bar.progress(min(1.0, max(0.0, fraction)), text=message)


def activate_trained(dataset: InteractionDataset, split: Split, result: TrainResult) -> ActiveModel:
    active = ActiveModel(dataset, split, result.model, result.test,
                         f"trained {result.model.label} ({result.epochs_run} epochs, best {result.best_epoch})",
                         result.seconds)
    st.session_state[Keys.ACTIVE] = active
    return active


def activate_loaded(dataset: InteractionDataset, split: Split, folder: str) -> ActiveModel:
    """Load a saved model for this dataset (refused with a clear message when it does not match)."""
    model, meta = load_model(folder, dataset, train_pairs=split.train, device=get_device())
    test = evaluate_full(model.scorer(), split, "test", device=get_device())
    active = ActiveModel(dataset, split, model, test, f"loaded {MODEL_INFO[meta['model']].label} from {folder}")
    st.session_state[Keys.ACTIVE] = active
    return active


def save_active(folder: str, result: TrainResult, dataset: InteractionDataset) -> Path:
    return save_model(folder, result, dataset)


def ranking_table(result: RankingResult) -> pd.DataFrame:
    """NDCG and HR at 5, 10, 20 as one row, with the protocol named."""
    columns = [f"{m}@{k}" for k in (5, 10, 20) for m in ("NDCG", "HR")]
    row = {"protocol": "full ranking (test)", "users": result.n_users,
           **{c: result.metrics[c] for c in columns if c in result.metrics}}
    return pd.DataFrame([row])


def device_caption() -> str:
    return f"Compute device: {describe(get_device())}" + ("" if torch.cuda.is_available() else " (no GPU found)")


def require_model() -> ActiveModel | None:
    """The active model, or a hint to train one first (pages that need it call this)."""
    active = st.session_state.get(Keys.ACTIVE)
    if active is None:
        st.info("No model yet: train or load one on the **Model** page first.")
    return active
