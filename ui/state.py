"""Session state: every key the pages share, defined once, and the model the dashboard is working on."""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from core.data import InteractionDataset, Split
from core.metrics import RankingResult
from core.models import Recommender


class Keys:
    """Every st.session_state key the pages share, defined once."""

    ACTIVE = "active_model"  # the ActiveModel the other pages work on
    LAST_TRAIN_RESULT = "last_train_result"  # the Model page's latest TrainResult (for its history and saving)
    UPLOAD_INTERACTIONS = "upload_interactions"  # (file name, bytes) of an uploaded interactions CSV
    UPLOAD_ATTRIBUTES = "upload_attributes"  # (file name, bytes) of an uploaded attributes CSV, or None
    UPLOAD_EMBEDDINGS = "upload_embeddings"  # (file name, bytes) of uploaded user embeddings
    UPLOAD_EMBEDDING_ATTRIBUTES = "upload_embedding_attributes"  # (file name, bytes) of their attributes table
    UPLOAD_VERSION = "upload_version"  # bumped when an upload is removed, so its file_uploader starts empty
    ASSESS_AUDIT = "assess_audit"  # the Assess page's latest audit: {"settings", "results", "labels"}
    ASSESS_EDITED = "assess_edited"  # the Assess page's latest unlearning run: {"settings", "result", "comparison"}
    UPLOAD_ITEM_TABLE = "upload_item_table"  # (file name, bytes) of a model's item table (Assess page)
    UPLOAD_MODEL_INTERACTIONS = "upload_model_interactions"  # (file name, bytes) of that model's interactions
    AUDIT_RESULTS = "audit_results"  # the Audit page's latest StoredAudit
    UNLEARNING_RUNS = "unlearning_runs"  # {context: {"original": MethodEvaluation, "runs": [MethodEvaluation]}}
    UNLEARNING_SWEEPS = "unlearning_sweeps"  # trade-off sweep frames by (table, method, settings, attributes)
    UNLEARNING_METHODS_MODE = "unlearn_methods_mode"  # "single"/"multi": when it changes, the method defaults do
    DELETION_RUN = "deletion_run"  # the Deletion page's latest run: {"context", "request", "report"}
    DELETION_UPLOAD = "deletion_upload"  # (file name, bytes) of an uploaded forget request
    JOB_OWNER = "job_owner"  # this browser tab's token for its background jobs (also in the URL, for reloads)
    JOBS_USED = "jobs_used"  # {job kind: id of the finished job whose result this session already took}


@dataclass(frozen=True)
class ActiveModel:
    """The model the dashboard is working on, with its data and its quality on the test split."""

    dataset: InteractionDataset
    split: Split
    model: Recommender
    test: RankingResult
    origin: str  # "trained …" or "loaded from …"
    seconds: float | None = None


def active_model() -> ActiveModel | None:
    return st.session_state.get(Keys.ACTIVE)


def set_active(active: ActiveModel) -> ActiveModel:
    st.session_state[Keys.ACTIVE] = active
    return active


def require_model() -> ActiveModel | None:
    """The active model, or a hint to train one first (pages that need it call this)."""
    active = active_model()
    if active is None:
        st.info("No model yet: train or load one on the **Model** page first.")
    return active
