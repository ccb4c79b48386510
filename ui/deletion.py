"""What the Deletion page draws and asks: the request picker, method settings, the comparison table and its charts.
The numbers all come from core.unlearning.deletion (one comparison function); nothing is computed here."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from core.data import Split
from core.unlearning.deletion import (
    DELETERS, DeletionReport, ForgetRequest, hyperparameters, random_interactions, random_users, read_request,
)
from core.unlearning.deletion.completeness import TOP_K

from .state import Keys
from .widgets import hyperparameter_widgets

RANDOM_INTERACTIONS, RANDOM_USERS, PICK_USERS, UPLOAD = ("Random interactions", "Random users", "Pick users",
                                                         "Upload a CSV")
COMPLETENESS = {"forgotten-vs-retained AUC": "AUC (0–1)", f"forget HR@{TOP_K}": "share of forgotten pairs (0–1)",
                "MIA AUC": "attacker AUC (0–1)"}
DEFAULT_METHODS = ("retrain", "lightul")


def request_picker(split: Split) -> ForgetRequest | None:
    """The forget request the user chose; raises DataError (shown by the page) when it is refused."""
    kind = st.radio("What to forget", (RANDOM_INTERACTIONS, RANDOM_USERS, PICK_USERS, UPLOAD), horizontal=True,
                    key="delete_request_kind")
    if kind == RANDOM_INTERACTIONS:
        share = st.number_input("Share of training interactions (%)", 0.1, 50.0, 1.0, 0.5, key="delete_share_pairs")
        return random_interactions(split, share / 100, seed=0)
    if kind == RANDOM_USERS:
        share = st.number_input("Share of users (%)", 0.1, 50.0, 5.0, 1.0, key="delete_share_users")
        return random_users(split, share / 100, seed=0)
    if kind == PICK_USERS:
        text = st.text_input("User ids to forget (the dataset's own ids, separated by commas or spaces)",
                             key="delete_user_ids", placeholder=", ".join(map(str, split.dataset.user_ids[:3])))
        if not text.strip():
            st.info("Type one or more user ids.")
            return None
        ids = [t for t in text.replace(",", " ").split() if t]
        return read_request(("user\n" + "\n".join(ids)).encode(), split, "the user ids typed")
    uploaded = st.file_uploader("CSV of (user, item) pairs, or a user or an item column alone",
                                type=["csv", "tsv", "txt"], key="delete_upload")
    if uploaded is not None:
        st.session_state[Keys.DELETION_UPLOAD] = (uploaded.name, uploaded.getvalue())
    stored = st.session_state.get(Keys.DELETION_UPLOAD)
    if stored is None:
        st.info("Upload a CSV with a header: user and item columns for pairs, or only user (or item) for whole users "
                "(items); ids as in the dataset.")
        return None
    return read_request(stored[1], split, stored[0])


def method_settings(name: str, prefix: str = "delete") -> dict:
    """One number box (or choice) per hyper-parameter of a deletion method, defaults pre-set."""
    return hyperparameter_widgets(name, prefix, specs=hyperparameters(name), numbers_as_inputs=True)


def method_label(name: str) -> str:
    return DELETERS[name].label


def comparison_frame(report: DeletionReport) -> pd.DataFrame:
    """The side-by-side table as shown: the report's columns, verdict second, numbers rounded for reading."""
    return report.to_frame().drop(columns=["device"]).round(4)


def completeness_figure(report: DeletionReport) -> go.Figure:
    """One panel per completeness measure: a bar per method, Retrain's value marked by a dashed line."""
    frame = report.to_frame()
    figure = make_subplots(rows=1, cols=len(COMPLETENESS), subplot_titles=list(COMPLETENESS))
    reference = frame[frame["method"] == report.row("retrain").label].iloc[0]
    for column, (measure, unit) in enumerate(COMPLETENESS.items(), start=1):
        figure.add_trace(go.Bar(x=frame["method"], y=frame[measure], name=measure, showlegend=False,
                                marker_color=["#9e9e9e" if m == "Retrain" else "#1f77b4" for m in frame["method"]]),
                         row=1, col=column)
        figure.add_hline(y=reference[measure], line_dash="dash", line_color="#d62728", row=1, col=column,
                         annotation_text="Retrain", annotation_position="top left")
        figure.update_yaxes(title_text=unit, row=1, col=column)
        figure.update_xaxes(title_text="method", row=1, col=column)
    figure.update_layout(title="Completeness of each method beside Retrain's (dashed red line)", height=420,
                         margin={"t": 80})
    return figure


def rank_figure(report: DeletionReport) -> go.Figure:
    """Where the forgotten items now rank for their users: the cumulative share of forgotten pairs by rank."""
    figure = go.Figure()
    for row in report.rows:
        ranks = np.sort(row.scan.forget_ranks + 1)
        if not len(ranks):
            continue
        share = np.arange(1, len(ranks) + 1) / len(ranks)
        figure.add_trace(go.Scatter(x=ranks, y=share, mode="lines", name=row.label,
                                    line={"dash": "dash"} if row.method == "retrain" else {}))
    figure.add_vline(x=TOP_K, line_dash="dot", line_color="#555", annotation_text=f"top {TOP_K}")
    figure.update_layout(title="Where the forgotten items now rank for their users", height=420,
                         xaxis_title="rank among the items the user has not got (1 = top; log scale)",
                         yaxis_title="share of forgotten pairs at or above this rank (0–1)", xaxis_type="log")
    return figure
