"""Tables and Plotly figures the pages draw (no widgets here)."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from core.audit import ATTACKERS, AttributeVerdict, AuditResult
from core.data import AttributeLabels
from core.evaluation import Comparison
from core.metrics import RankingResult
from core.unlearning.attribute import UnlearningResult
from core.views import group_values, separating_dimensions

from .cache import cached_umap


NDCG_EXPLANATION = ("NDCG@20 measures recommendation quality: how high each user's held-out items rank in their top 20 "
                    "(0 to 1, higher is better).")


def training_figure(history: pd.DataFrame) -> go.Figure:
    """Validation NDCG@20 per epoch (what early stopping watches)."""
    figure = px.line(history, x="epoch", y="valid NDCG@20", markers=True)
    figure.update_layout(title="Validation NDCG@20 during training", height=260, margin={"t": 40, "b": 10},
                         xaxis_title="epoch", yaxis_title="NDCG@20 (validation, 0–1)")
    return figure


def ranking_table(result: RankingResult) -> pd.DataFrame:
    """NDCG and HR at 5, 10, 20 as one row, with the protocol named."""
    columns = [f"{m}@{k}" for k in (5, 10, 20) for m in ("NDCG", "HR")]
    row = {"protocol": "full ranking (test)", "users": result.n_users,
           **{c: result.metrics[c] for c in columns if c in result.metrics}}
    return pd.DataFrame([row])


def verdict_table(verdicts: Mapping[str, AttributeVerdict], labels: Mapping[str, AttributeLabels]) -> pd.DataFrame:
    """One row per attribute: its type, status, the representation and attacker that decided it, the gap."""
    rows = []
    for name, v in verdicts.items():
        rows.append({
            "attribute": name, "type": labels[name].kind if name in labels else "", "verdict": v.status,
            "representation": v.representation, "strongest attacker": v.attacker,
            "AUC": f"{v.auc:.3f} [{v.auc_low:.3f}, {v.auc_high:.3f}]", "|AUC − 0.5|": round(v.leakage, 3),
            "tolerance": v.tolerance, "p-value": round(v.p_value, 4), "users": v.n_users,
        })
    return pd.DataFrame(rows)


def interval_table(results: Mapping[str, AuditResult]) -> pd.DataFrame:
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


def target_outcome(result: UnlearningResult | None) -> tuple[float | None, str]:
    """(target, 'yes'/'no'/'no: within it, not its re-audit margin') of a target-driven run, (None, 'no target') otherwise; the empty string for the
    original. Sequential D2D-R reports one search per attribute (reached when every one is)."""
    if result is None:
        return None, ""
    details = result.details or {}
    searches = [details] if "target_gap" in details else [d for d in details.values()
                                                           if isinstance(d, dict) and "target_gap" in d]
    if not searches:
        return None, "no target"
    if all(s.get("reached") for s in searches):
        return float(searches[0]["target_gap"]), "yes"
    if all(s.get("reached") or s.get("within_target_not_margin") for s in searches):
        return float(searches[0]["target_gap"]), "no: within it, not its re-audit margin"
    return float(searches[0]["target_gap"]), "no"


def comparison_table(comparison: Comparison) -> pd.DataFrame:
    """The side-by-side table: verdict, worst gap, target and whether it was reached first, the method's notes
    last."""
    frame = comparison.to_frame()
    outcomes = [target_outcome(row.result) for row in comparison.rows]
    frame["target"] = [t for t, _ in outcomes]
    frame["target reached"] = [r for _, r in outcomes]
    frame["notes"] = ["" if row.result is None else row.result.notes for row in comparison.rows]
    first = ["method", "verdict", "worst |AUC − 0.5|", "target", "target reached"]
    return frame[first + [c for c in frame.columns if c not in first and c != "notes"] + ["notes"]]


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


def distribution_figure(tables: Mapping[str, np.ndarray], labels: AttributeLabels, k: int = 4) -> go.Figure:
    """Histograms by group of the k most group-separating dimensions (of the first table), for each stage."""
    first = next(iter(tables.values()))
    dims = separating_dimensions(first, labels, k)
    frame = pd.concat([group_values(t, labels, dims, stage) for stage, t in tables.items()], ignore_index=True)
    facet_row = "stage" if len(tables) > 1 else None
    figure = px.histogram(frame, x="value", color="group", facet_col="dimension", facet_row=facet_row,
                          barmode="overlay", opacity=0.55, histnorm="probability density", nbins=40)
    figure.update_xaxes(matches=None, title_text="embedding value (model units)")
    figure.update_yaxes(title_text="density")
    figure.update_layout(title=f"{labels.name}: the {k} dimensions that separate the groups most, by group",
                         height=300 * (len(tables) if facet_row else 1) + 40, margin={"t": 60, "b": 10})
    return figure


def umap_figure(tables: Mapping[str, np.ndarray], labels: AttributeLabels, max_users: int = 1000) -> go.Figure:
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
                        opacity=0.7, height=440, title=f"UMAP of the user embeddings, coloured by {labels.name}")
    figure.update_traces(marker={"size": 4})
    figure.update_xaxes(matches=None, title_text="UMAP 1 (no unit)")
    figure.update_yaxes(matches=None, title_text="UMAP 2 (no unit)")
    return figure


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
    figure.update_layout(height=440, margin={"t": 50, "b": 10}, xaxis_title="NDCG@20 (test, 0–1)",
                         yaxis_title=f"attacker AUC (0.5 = chance; sweeping {weight_name})",
                         title=f"Privacy–utility trade-off: attacker AUC against NDCG@20 over {weight_name}")
    return figure
