"""What the Audit and Unlearning pages work on, and the widgets that choose it: the active model's user
representations, or uploaded embeddings with an attributes table."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
import torch

from core.data import DataError
from core.models import served_representations

from .cache import cached_upload, digest
from .state import ActiveModel, Keys, active_model

MODEL_TARGET = "Trained model"
UPLOAD_TARGET = "Upload embeddings"


@dataclass(frozen=True)
class AuditTarget:
    """What is attacked: named users × d tables with an attribute table aligned to their rows."""

    key: str  # identifies the tables and attributes, for caching
    tables: dict[str, np.ndarray]  # representation name -> N × d (every one the model serves with)
    attributes: pd.DataFrame
    active: ActiveModel | None = None  # set when the tables come from the trained model

    @property
    def attribute_names(self) -> list[str]:
        return attribute_names(self.attributes)


@dataclass(frozen=True)
class UnlearningSubject:
    """What unlearning edits: the editable user table, its attributes, and the model when there is one."""

    key: str
    table: np.ndarray
    attributes: pd.DataFrame
    active: ActiveModel | None = None

    @property
    def attribute_names(self) -> list[str]:
        return attribute_names(self.attributes)


def attribute_names(attributes: pd.DataFrame) -> list[str]:
    """The attribute columns that vary (a constant column cannot be attacked)."""
    return [c for c in attributes.columns if attributes[c].nunique() > 1]


def served_tables(active: ActiveModel) -> dict[str, np.ndarray]:
    """Every user representation the active model serves with (LightGCN: layer 0 and propagated; NeuMF: both
    tables together), as CPU arrays."""
    with torch.no_grad():
        reps = served_representations(active.model, active.model.user_table().to(active.model.device))
    return {name: table.detach().cpu().numpy() for name, table in reps.items()}


def _source(prefix: str, label: str) -> str:
    choices = ([MODEL_TARGET] if active_model() is not None else []) + [UPLOAD_TARGET]
    return st.radio(label, choices, horizontal=True, key=f"{prefix}_source")


def audit_target(prefix: str) -> AuditTarget | None:
    """Widgets to choose what to attack: every representation the trained model serves with, or uploaded files."""
    if _source(prefix, "Embeddings to audit") == MODEL_TARGET:
        active = active_model()
        tables = served_tables(active)
        st.caption(f"{active.dataset.name}, {active.origin}: {active.dataset.n_users:,} users. Representations "
                   f"audited: {', '.join(tables)} (every one the model serves with; p-values are corrected over "
                   "them).")
        key = "model:" + digest(*tables.values()) + ":" + ",".join(tables)
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
    key = "upload:" + digest(upload.table, upload.user_ids)
    return AuditTarget(key, {Path(embeddings[0]).stem: upload.table}, upload.attributes)


def unlearning_subject(prefix: str) -> UnlearningSubject | None:
    """Widgets to choose the table to edit: the trained model's user table or uploaded embeddings."""
    if _source(prefix, "Embeddings to edit") == MODEL_TARGET:
        active = active_model()
        table = active.model.user_table().cpu().numpy()
        st.caption(f"{active.dataset.name}, {active.origin}: {active.dataset.n_users:,} users × {table.shape[1]} "
                   "dimensions (the model's editable user table; items stay untouched). Leakage is measured on "
                   "every representation the model serves with.")
        return UnlearningSubject("model:" + digest(table), table, active.dataset.attributes, active)
    target = uploaded_target(prefix)
    if target is None:
        return None
    table = next(iter(target.tables.values()))
    st.caption("Uploaded embeddings: only methods that need no recommender are offered, and ranking quality "
               "cannot be measured.")
    return UnlearningSubject(target.key, table, target.attributes)
