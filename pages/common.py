"""Shared UI pieces for the pages: session-state keys in one place, cached loaders and trainers, small widgets.

Pages stay thin: they collect inputs, call these helpers (which call `core`), and draw.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
import torch

from core.attacks import ATTACKERS, AuditResult, run_audit
from core.attribute_unlearning import hyperparameters, make_unlearner
from core.checkpoint import load_model, save_model
from core.data import (
    DataError, InteractionDataset, Split, encode_attribute, load_dataset, load_interactions_csv, split_per_user,
)
from core.device import describe, get_device
from core.evaluation import Comparison, evaluate_unlearning
from core.metrics import RankingResult, evaluate_full
from core.models import MODEL_INFO, Recommender
from core.training import TrainConfig, TrainResult, train_model
from core.uploads import UploadedEmbeddings, prepare_upload
from core.views import group_values, separating_dimensions, umap_2d


class Keys:
    """Every st.session_state key the pages share, defined once."""

    DATA_SOURCE = "data_source"  # (kind, detail) of the loaded dataset
    UPLOAD_INTERACTIONS = "upload_interactions"  # (file name, bytes) of an uploaded interactions CSV
    UPLOAD_ATTRIBUTES = "upload_attributes"  # (file name, bytes) of an uploaded attributes CSV, or None
    ACTIVE = "active_model"  # the ActiveModel the other pages work on
    UPLOAD_EMBEDDINGS = "upload_embeddings"  # (file name, bytes) of uploaded user embeddings
    UPLOAD_EMBEDDING_ATTRIBUTES = "upload_embedding_attributes"  # (file name, bytes) of their attributes table
    AUDIT_RESULTS = "audit_results"
    UNLEARNING_RUNS = "unlearning_runs"  # {(table, attributes, attackers, protocol): {"original", "runs"}}
    UNLEARNING_SWEEPS = "unlearning_sweeps"  # trade-off sweep frames by (table, method, settings, attributes)
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


# ---------------------------------------------------------------------------------------------- audit targets

MODEL_TARGET = "Trained model"
UPLOAD_TARGET = "Upload embeddings"


@dataclass(frozen=True)
class AuditTarget:
    """What is attacked: named users × d tables with an attribute table aligned to their rows."""

    key: str  # identifies the tables and attributes, for caching
    tables: dict  # representation name -> np.ndarray (N × d)
    attributes: pd.DataFrame
    active: ActiveModel | None = None  # set when the tables come from the trained model

    @property
    def attribute_names(self) -> list[str]:
        return [c for c in self.attributes.columns if self.attributes[c].nunique() > 1]

    def labels(self, names: list[str], bins: int) -> dict:
        return {n: encode_attribute(self.attributes[n], n, n_bins=bins) for n in names}


def _digest(*arrays) -> str:
    digest = hashlib.sha1()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


@st.cache_data(show_spinner="Checking the files…", max_entries=8)
def cached_upload(embeddings: tuple[str, bytes], attributes: tuple[str, bytes]) -> UploadedEmbeddings:
    return prepare_upload(embeddings[1], attributes[1], embeddings[0], attributes[0])


def audit_target(prefix: str) -> AuditTarget | None:
    """Widgets to choose what to attack: the trained model's representation(s) or uploaded files."""
    active = st.session_state.get(Keys.ACTIVE)
    choices = ([MODEL_TARGET] if active is not None else []) + [UPLOAD_TARGET]
    source = st.radio("Embeddings to audit", choices, horizontal=True, key=f"{prefix}_source")
    if source == MODEL_TARGET:
        representations = {n: t.detach().cpu().numpy() for n, t in active.model.representations().items()}
        names = list(representations)
        default = [n for n in names if n not in ("gmf", "mlp")]  # NeuMF: both tables together by default
        chosen = st.multiselect("Representation(s)", names, default=default, key=f"{prefix}_representations",
                                help="LightGCN: layer 0 (the parameters) and the propagated embeddings (what scoring "
                                     "and a serving cache use). NeuMF: both user tables together, or each alone.")
        if not chosen:
            st.info("Choose at least one representation.")
            return None
        tables = {n: representations[n] for n in chosen}
        st.caption(f"{active.dataset.name}, {active.origin}: {active.dataset.n_users:,} users.")
        key = "model:" + _digest(*tables.values()) + ":" + ",".join(chosen)
        return AuditTarget(key, tables, active.dataset.attributes, active)
    return uploaded_target(prefix)


def uploaded_target(prefix: str) -> AuditTarget | None:
    """Widgets to upload user embeddings and their attributes; the checked files as a target, else None."""
    left, right = st.columns(2)
    embeddings_file = left.file_uploader("User embeddings (.npy, .csv, .parquet, .safetensors)",
                                         type=["npy", "csv", "parquet", "safetensors"], key=f"{prefix}_emb_file")
    attributes_file = right.file_uploader("Attributes (CSV or Parquet with a user-id column)",
                                          type=["csv", "parquet"], key=f"{prefix}_attr_file")
    if embeddings_file is not None:
        st.session_state[Keys.UPLOAD_EMBEDDINGS] = (embeddings_file.name, embeddings_file.getvalue())
    if attributes_file is not None:
        st.session_state[Keys.UPLOAD_EMBEDDING_ATTRIBUTES] = (attributes_file.name, attributes_file.getvalue())
    embeddings = st.session_state.get(Keys.UPLOAD_EMBEDDINGS)
    attributes = st.session_state.get(Keys.UPLOAD_EMBEDDING_ATTRIBUTES)
    if embeddings is None or attributes is None:
        st.info("Upload both files. Embeddings: one row per user (optionally a user_id column). Attributes: a "
                "user_id column and one column per attribute. Pickled files are never loaded.")
        return None
    try:
        upload = cached_upload(embeddings, attributes)
    except DataError as error:
        st.error(f"The files cannot be audited: {error}")
        return None
    for warning in upload.warnings:
        st.warning(warning)
    st.caption(f"{embeddings[0]}: {upload.table.shape[0]:,} users × {upload.table.shape[1]} dimensions.")
    key = "upload:" + _digest(upload.table, upload.user_ids)
    return AuditTarget(key, {Path(embeddings[0]).stem: upload.table}, upload.attributes)


@st.cache_resource(show_spinner=False)
def _audit_store() -> dict:
    return {}


def cached_audit(target: AuditTarget, labels: dict, attackers: tuple, protocol, progress=None) -> dict:
    """Audit every table of the target once per setting; a page rerun reuses the results."""
    store = _audit_store()
    key = (target.key, tuple((n, l.classes) for n, l in labels.items()), attackers, protocol)
    if key not in store:
        if len(store) >= 16:
            store.pop(next(iter(store)))
        results = {}
        for i, (name, table) in enumerate(target.tables.items()):
            def scaled(fraction, message, i=i, name=name):
                if progress is not None:
                    progress((i + fraction) / len(target.tables), f"{name}: {message}")
            results[name] = run_audit(table, labels, attackers=attackers, protocol=protocol, progress=scaled,
                                      representation_name=name)
        store[key] = results
    return store[key]


# ---------------------------------------------------------------------------------------------- drawing


def verdict_messages(result: AuditResult, prefix: str = "") -> None:
    for verdict in result.verdicts:
        (st.error if verdict.leaks else st.success)(prefix + verdict.explanation)


def interval_table(results: dict) -> pd.DataFrame:
    """The audit table a person reads: each metric as 'mean [low, high]', the p-value and the verdict."""
    frames = []
    for result in results.values():
        frame = result.to_frame()
        shown = frame[["representation", "attribute", "attacker"]].copy()
        for metric in ("AUC", "accuracy", "balanced accuracy", "macro-F1"):
            shown[metric] = [f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, lo, hi in
                             zip(frame[metric], frame[f"{metric} low"], frame[f"{metric} high"])]
        shown["|AUC − 0.5|"] = frame["|AUC − 0.5|"].round(3)
        shown["p-value"] = frame["p-value"].round(4)
        shown["verdict"] = frame["attribute verdict"]
        shown["seconds"] = frame["seconds"].round(2)
        frames.append(shown)
    return pd.concat(frames, ignore_index=True)


def roc_figure(result: AuditResult, attribute: str, title: str = "") -> go.Figure:
    figure = go.Figure()
    for score in result.scores:
        if score.attribute == attribute:
            label = ATTACKERS[score.attacker].label
            figure.add_scatter(x=score.roc_fpr, y=score.roc_tpr, mode="lines", name=f"{label} (AUC {score.auc:.3f})")
    figure.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "grey"}, name="chance")
    figure.update_layout(title=title, xaxis_title="false-positive rate", yaxis_title="true-positive rate",
                         height=380, margin={"t": 40, "b": 10})
    return figure


def distribution_figure(tables: dict, labels, k: int = 4) -> go.Figure:
    """Histograms by group of the k most group-separating dimensions (of the first table), for each stage."""
    first = next(iter(tables.values()))
    dims = separating_dimensions(first, labels, k)
    frame = pd.concat([group_values(t, labels, dims, stage) for stage, t in tables.items()], ignore_index=True)
    facet_row = "stage" if len(tables) > 1 else None
    figure = px.histogram(frame, x="value", color="group", facet_col="dimension", facet_row=facet_row,
                          barmode="overlay", opacity=0.55, histnorm="probability density", nbins=40)
    figure.update_xaxes(matches=None)
    figure.update_layout(height=300 * (len(tables) if facet_row else 1), margin={"t": 30, "b": 10})
    return figure


@st.cache_data(show_spinner="Projecting with UMAP…", max_entries=8)
def cached_umap(table: np.ndarray, max_users: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    return umap_2d(table, max_users=max_users)


def umap_figure(tables: dict, labels, max_users: int = 1000) -> go.Figure:
    """UMAP of each table (same user subsample), coloured by the attribute's group."""
    groups = np.full(len(labels.mask), "unknown", dtype=object)
    groups[labels.mask] = np.asarray(labels.classes, dtype=object)[labels.codes]
    frames = []
    for stage, table in tables.items():
        coordinates, index = cached_umap(np.asarray(table), max_users)
        frames.append(pd.DataFrame({"UMAP 1": coordinates[:, 0], "UMAP 2": coordinates[:, 1],
                                    "group": groups[index], "stage": stage or "embeddings"}))
    frame = pd.concat(frames, ignore_index=True)
    figure = px.scatter(frame, x="UMAP 1", y="UMAP 2", color="group", facet_col="stage" if len(tables) > 1 else None,
                        opacity=0.7, height=420)
    figure.update_traces(marker={"size": 4})
    figure.update_xaxes(matches=None)
    figure.update_yaxes(matches=None)
    return figure


# ---------------------------------------------------------------------------------------------- unlearning


@dataclass(frozen=True)
class UnlearningSubject:
    """What unlearning edits: the editable user table, its attributes, and the model when there is one."""

    key: str
    table: np.ndarray
    attributes: pd.DataFrame
    active: ActiveModel | None = None


def unlearning_subject(prefix: str) -> UnlearningSubject | None:
    """Widgets to choose the table to edit: the trained model's user table or uploaded embeddings."""
    active = st.session_state.get(Keys.ACTIVE)
    choices = ([MODEL_TARGET] if active is not None else []) + [UPLOAD_TARGET]
    source = st.radio("Embeddings to edit", choices, horizontal=True, key=f"{prefix}_source")
    if source == MODEL_TARGET:
        table = active.model.user_table().cpu().numpy()
        st.caption(f"{active.dataset.name}, {active.origin}: {active.dataset.n_users:,} users × {table.shape[1]} "
                   "dimensions (the model's editable user table; items stay untouched).")
        return UnlearningSubject("model:" + _digest(table), table, active.dataset.attributes, active)
    target = uploaded_target(prefix)
    if target is None:
        return None
    table = next(iter(target.tables.values()))
    st.caption("Uploaded embeddings: only methods that need no recommender are offered, and ranking quality "
               "cannot be measured.")
    return UnlearningSubject(target.key, table, target.attributes)


def _log_grid(low: float, high: float, default: float) -> list[float]:
    """1-2-5 steps per decade between low and high, with the default included."""
    values = {float(f"{m * 10.0 ** e:.6g}") for e in range(-6, 7) for m in (1, 2, 5)}
    return sorted(v for v in values | {float(default)} if low <= v <= high)


def hyperparameter_widgets(name: str, prefix: str) -> dict:
    """One widget per hyper-parameter of a method, defaults pre-set; returns the chosen values."""
    params = {}
    for hp in hyperparameters(name):
        key = f"{prefix}_{name}_{hp.name}"
        if hp.choices:
            params[hp.name] = st.selectbox(hp.name, hp.choices, index=hp.choices.index(hp.default), key=key,
                                           help=hp.help)
        elif hp.kind is float and hp.log:
            params[hp.name] = st.select_slider(hp.name, _log_grid(hp.low, hp.high, hp.default), value=hp.default,
                                               key=key, help=hp.help)
        elif hp.kind is float:
            params[hp.name] = st.slider(hp.name, float(hp.low), float(hp.high), float(hp.default), key=key,
                                        help=hp.help)
        elif hp.kind is int and hp.low is not None:
            params[hp.name] = st.slider(hp.name, int(hp.low), int(hp.high), int(hp.default), key=key, help=hp.help)
        else:
            params[hp.name] = st.number_input(hp.name, value=hp.default, step=1, key=key, help=hp.help)
    return params


@st.cache_resource(show_spinner=False)
def _unlearning_store() -> dict:
    return {}


def cached_unlearning(subject: UnlearningSubject, name: str, params: dict, labels: dict, progress=None):
    """Run a method once per (table, attributes, parameters); a page rerun reuses the result."""
    store = _unlearning_store()
    key = (subject.key, name, tuple(sorted(params.items())), tuple((n, l.classes) for n, l in labels.items()))
    if key not in store:
        if len(store) >= 32:
            store.pop(next(iter(store)))
        active = subject.active
        store[key] = make_unlearner(name, **params).fit_transform(
            torch.as_tensor(subject.table), labels, active.model if active else None,
            active.split if active else None, progress=progress)
    return store[key]


def cached_evaluation(subject: UnlearningSubject, results: list, labels: dict, attackers: tuple, protocol,
                      progress=None) -> Comparison:
    """The before/after comparison of `results` with the original table (each evaluated once, then reused)."""
    store = _unlearning_store()
    active = subject.active
    rows = []
    entries = [None] + list(results)
    for i, result in enumerate(entries):
        method = "original" if result is None else (result.method, tuple(sorted(result.params.items())))
        key = ("evaluation", subject.key, method,
               tuple((n, l.classes) for n, l in labels.items()), attackers, protocol)
        if key not in store:
            def scaled(fraction, message, i=i):
                if progress is not None:
                    progress((i + fraction) / len(entries), message)
            comparison = evaluate_unlearning(
                torch.as_tensor(subject.table), [] if result is None else [result], labels,
                active.model if active else None, active.split if active else None, attackers=attackers,
                protocol=protocol, progress=scaled)
            store[key] = comparison.rows[-1]
        rows.append(store[key])
    return Comparison(tuple(rows))


def tradeoff_figure(sweep: pd.DataFrame, original: pd.DataFrame, weight_name: str) -> go.Figure:
    """Attacker AUC against NDCG@20 over the sweep, one line per attribute and attacker; stars mark the original
    (both frames have attribute, attacker, AUC and NDCG@20 columns)."""
    sweep = sweep.assign(series=sweep["attribute"] + " · " + sweep["attacker"])
    figure = px.line(sweep.sort_values("weight"), x="NDCG@20", y="AUC", color="series", markers=True,
                     hover_data={"weight": True})
    for _, row in original.iterrows():
        figure.add_scatter(x=[row["NDCG@20"]], y=[row["AUC"]], mode="markers", marker={"symbol": "star", "size": 13},
                           name=f"{row['attribute']} · {row['attacker']} (original)")
    figure.add_hline(y=0.5, line_dash="dot", line_color="grey", annotation_text="chance")
    figure.update_layout(height=420, margin={"t": 30, "b": 10}, xaxis_title="NDCG@20 (test)",
                         yaxis_title=f"attacker AUC (sweeping {weight_name})")
    return figure
