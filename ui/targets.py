"""What the Audit and Unlearning pages work on, and the widgets that choose it: the active model's user
representations, or uploaded embeddings with an attributes table."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
import torch

from core.data import DataError, upload_limit_mb
from core.models import served_representations
from core.uploads import ATTRIBUTE_FORMATS, EMBEDDING_FORMATS, UploadedEmbeddings, attributes_bytes, embeddings_bytes, sample_pair

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
    user_ids: np.ndarray | None = None  # each row's user id, for exports (None: the files had none)
    upload: UploadedEmbeddings | None = None  # what was read, when the tables were uploaded

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
    user_ids: np.ndarray | None = None  # each row's user id, for exports (None: the files had none)

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
        return AuditTarget(key, tables, active.dataset.attributes, active, active.dataset.user_ids)
    return uploaded_target(prefix)


def upload_limit_text() -> str:
    """The one upload limit, as the pages state it (read from .streamlit/config.toml, as Streamlit does)."""
    return (f"Up to {upload_limit_mb()} MB per file (server.maxUploadSize in .streamlit/config.toml); larger tables go "
            "through the command line: python -m core audit --embeddings FILE --attributes FILE.")


def _upload_slot(prefix: str, column, label: str, formats: tuple[str, ...], key: str, name: str) -> None:
    """A file uploader whose bytes are kept in session state under `key` (so reruns and other pages see them),
    with a button that removes the kept file and empties the uploader, so it can be replaced."""
    version = st.session_state.get(Keys.UPLOAD_VERSION, 0)
    uploaded = column.file_uploader(label, type=list(formats), key=f"{prefix}_{name}_file_{version}")
    if uploaded is not None:
        st.session_state[key] = (uploaded.name, uploaded.getvalue())
    kept = st.session_state.get(key)
    if kept is not None:
        column.caption(f"In use: **{kept[0]}** ({len(kept[1]) / 1024:,.1f} KB)")
        if column.button(f"Remove {kept[0]}", key=f"{prefix}_{name}_remove"):
            st.session_state.pop(key, None)
            st.session_state[Keys.UPLOAD_VERSION] = version + 1  # a fresh, empty uploader
            st.rerun()


def uploaded_target(prefix: str) -> AuditTarget | None:
    """Widgets to upload user embeddings and their attributes (removable, replaceable); the checked, id-aligned
    files as a target with what was read shown, else None with the reason shown."""
    st.caption(upload_limit_text())
    left, right = st.columns(2)
    _upload_slot(prefix, left, f"User embeddings ({', '.join('.' + f for f in EMBEDDING_FORMATS)})",
                 EMBEDDING_FORMATS, Keys.UPLOAD_EMBEDDINGS, "emb")
    _upload_slot(prefix, right, "Attributes (CSV or Parquet, with a user-id column)", ATTRIBUTE_FORMATS,
                 Keys.UPLOAD_EMBEDDING_ATTRIBUTES, "attr")
    embeddings = st.session_state.get(Keys.UPLOAD_EMBEDDINGS)
    attributes = st.session_state.get(Keys.UPLOAD_EMBEDDING_ATTRIBUTES)
    if embeddings is None or attributes is None:
        st.info("Upload both files. Embeddings: one row per user, with the users' ids (a user_id column, or a "
                "'user_ids' array in .npz/.safetensors). Attributes: a user_id column and one column per attribute. "
                "Rows are matched on the ids; pickled files are never loaded.")
        return None
    by_position = st.checkbox(
        "Match by position (row i of the embeddings is the user on row i of the attributes file)",
        key=f"{prefix}_match_by_position",
        help="Only for an embeddings file without user ids (such as .npy). Nothing can check that both files list "
             "the users in the same order, so files without ids against attributes with ids are refused unless "
             "you tick this.")
    try:
        upload = cached_upload(embeddings, attributes, by_position)
    except DataError as error:
        st.error(f"The files cannot be audited: {error}")
        return None
    show_upload(embeddings[0], upload)
    key = "upload:" + digest(upload.table, upload.user_ids, upload.attributes.to_numpy().astype(str))
    return AuditTarget(key, {Path(embeddings[0]).stem: upload.table}, upload.attributes, None, upload.export_ids,
                       upload)


def show_upload(name: str, upload: UploadedEmbeddings) -> None:
    """What was read: rows, dimensions, dtype, how rows were matched and what did not match; notes and warnings."""
    how = ("**matched by position**" if upload.matched_by == "position" else "matched by user id")
    st.caption(f"{name}: {upload.table.shape[0]:,} users × {upload.table.shape[1]} dimensions ({upload.dtype}); "
               f"{upload.n_matched:,} users {how}; {len(upload.unmatched_embeddings):,} embedding rows without "
               f"attributes, {len(upload.unmatched_attributes):,} attribute rows without embeddings.")
    for note in upload.notes:
        st.info(note)
    for warning in upload.warnings:
        st.warning(warning)


def unlearning_subject(prefix: str) -> UnlearningSubject | None:
    """Widgets to choose the table to edit: the trained model's user table or uploaded embeddings."""
    if _source(prefix, "Embeddings to edit") == MODEL_TARGET:
        active = active_model()
        table = active.model.user_table().cpu().numpy()
        st.caption(f"{active.dataset.name}, {active.origin}: {active.dataset.n_users:,} users × {table.shape[1]} "
                   "dimensions (the model's editable user table; items stay untouched). Leakage is measured on "
                   "every representation the model serves with.")
        return UnlearningSubject("model:" + digest(table), table, active.dataset.attributes, active,
                                 active.dataset.user_ids)
    target = uploaded_target(prefix)
    if target is None:
        return None
    table = next(iter(target.tables.values()))
    st.caption("Uploaded embeddings: only methods that need no recommender are offered, and ranking quality "
               "cannot be measured.")
    return UnlearningSubject(target.key, table, target.attributes, user_ids=target.user_ids)


def edited_downloads(prefix: str, table: np.ndarray, user_ids: np.ndarray | None, attributes: pd.DataFrame,
                     stem: str) -> None:
    """Download buttons for an edited table in a chosen format, user ids kept (as a user_id column or a user_ids
    array; .npy holds none, so it re-imports by position only), and for the attributes with the same ids: the pair
    uploads back on the Assess page to the same numbers."""
    left, middle, right = st.columns([1, 2, 2], vertical_alignment="bottom")
    formats = ["csv", "parquet", "npz", "safetensors", "npy"]
    fmt = left.selectbox("Format", formats, key=f"{prefix}_download_format",
                         help="CSV/Parquet carry a user_id column, .npz/.safetensors a user_ids array; .npy carries "
                              "no ids (upload it back with 'match by position').")
    middle.download_button(f"Download the edited embeddings (.{fmt})", embeddings_bytes(table, user_ids, fmt),
                           file_name=f"{stem}.{fmt}", key=f"{prefix}_download_edited")
    right.download_button("Download their attributes (.csv)", attributes_bytes(attributes, user_ids),
                          file_name=f"{stem}_attributes.csv", mime="text/csv", key=f"{prefix}_download_attributes")


@st.cache_data(show_spinner=False)
def sample_files() -> tuple[bytes, bytes]:
    """The sample pair from the built-in demo (embeddings CSV with user ids, attributes CSV), built once."""
    return sample_pair()


# ---------------------------------------------------------------------------------------------- a model trained elsewhere


@st.cache_resource(show_spinner="Rebuilding the model…", max_entries=4)
def cached_external(users: tuple[str, bytes], items: tuple[str, bytes], interactions: tuple[str, bytes],
                    attributes: tuple[str, bytes] | None, device: str) -> ActiveModel:
    """The uploaded user and item tables as a dot-product model over their interactions, with its test quality."""
    from core.metrics import evaluate_full
    from core.uploads import prepare_external_model

    external = prepare_external_model(users[1], items[1], interactions[1], attributes and attributes[1], users[0],
                                      items[0], interactions[0], attributes and attributes[0], device=device)
    test = evaluate_full(external.model.scorer(), external.split, "test", device=torch.device(device))
    origin = f"dot-product model from {users[0]} and {items[0]}; " + "; ".join(external.notes)
    return ActiveModel(external.dataset, external.split, external.model, test, origin)


def external_model(prefix: str) -> ActiveModel | None:
    """Optional uploads of the item table and the interactions a model was trained and tested on, next to the user
    table already uploaded: the model rebuilt as a dot-product scorer (NDCG/HR before and after unlearning), or
    None (nothing uploaded, or refused with the reason shown)."""
    from .cache import compute_device
    from .figures import ranking_table

    with st.expander("A recommender trained elsewhere: add its item table and interactions to measure ranking "
                     "quality too", expanded=st.session_state.get(Keys.UPLOAD_ITEM_TABLE) is not None):
        st.caption("The embeddings above are its user table; the item table needs item ids (an item_id column or "
                   "an 'item_ids' array); the interactions are a CSV with user, item and, to evaluate on the test "
                   "set the model was tested on, a split column (train/test[/valid]). Scores are dot products "
                   "⟨user, item⟩, as for BPR-MF, so NDCG/HR before and after unlearning use the same function.")
        left, right = st.columns(2)
        _upload_slot(prefix, left, f"Item table ({', '.join('.' + f for f in EMBEDDING_FORMATS if f != 'npy')})",
                     tuple(f for f in EMBEDDING_FORMATS if f != "npy"), Keys.UPLOAD_ITEM_TABLE, "items")
        _upload_slot(prefix, right, "Interactions (CSV: user, item[, split])", ("csv", "tsv", "txt"),
                     Keys.UPLOAD_MODEL_INTERACTIONS, "interactions")
        users = st.session_state.get(Keys.UPLOAD_EMBEDDINGS)
        items = st.session_state.get(Keys.UPLOAD_ITEM_TABLE)
        interactions = st.session_state.get(Keys.UPLOAD_MODEL_INTERACTIONS)
        if users is None or items is None or interactions is None:
            return None
        try:
            active = cached_external(users, items, interactions, st.session_state.get(Keys.UPLOAD_EMBEDDING_ATTRIBUTES),
                                     str(compute_device()))
        except DataError as error:
            st.error(f"The model cannot be rebuilt: {error}")
            return None
        st.caption(f"{active.dataset.n_users:,} users, {active.dataset.n_items:,} items, "
                   f"{active.dataset.n_interactions:,} interactions; {active.origin}.")
        st.dataframe(ranking_table(active.test), hide_index=True)
    return active


def model_exports(active: ActiveModel) -> None:
    """Downloads of a dot-product model's user and item tables (with ids) and its interactions with their split:
    uploaded on the Assess page, they give back the same NDCG/HR."""
    from core.uploads import interactions_bytes, model_tables_bytes

    users, items = model_tables_bytes(active.model, active.dataset, "csv")
    left, middle, right = st.columns(3)
    left.download_button("User table (.csv)", users, file_name="users.csv", mime="text/csv",
                         key="model_export_users")
    middle.download_button("Item table (.csv)", items, file_name="items.csv", mime="text/csv",
                           key="model_export_items")
    right.download_button("Interactions with their split (.csv)", interactions_bytes(active.split),
                          file_name="interactions.csv", mime="text/csv", key="model_export_interactions")
    attributes = active.dataset.attributes
    if attributes.shape[1]:
        st.download_button("Attributes (.csv)", attributes_bytes(attributes, active.dataset.user_ids),
                           file_name="attributes.csv", mime="text/csv", key="model_export_attributes")
