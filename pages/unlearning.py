"""Unlearning page: edit the user table so chosen attributes can no longer be inferred, and compare methods."""
import io

import numpy as np
import pandas as pd
import streamlit as st

from core.attacks import ATTACKERS, CrossValidation, ShadowSplit
from core.attribute_unlearning import UNLEARNERS
from core.data import DataError, encode_attribute
from core.evaluation import Comparison, tradeoff_sweep
from pages.common import (
    Keys, cached_evaluation, cached_unlearning, distribution_figure, hyperparameter_widgets, progress_callback,
    tradeoff_figure, umap_figure, unlearning_subject,
)

st.title("Unlearning")
st.caption("Edit the user embeddings so that the chosen attributes can no longer be inferred, keep the "
           "recommendations, and compare methods side by side.")

subject = unlearning_subject("unlearn")
if subject is None:
    st.stop()

names = [c for c in subject.attributes.columns if subject.attributes[c].nunique() > 1]
attributes = st.multiselect("Attributes to forget", names, default=names[:1], key="unlearn_attributes")
if not attributes:
    st.info("Choose at least one attribute.")
    st.stop()
try:
    labels = {n: encode_attribute(subject.attributes[n], n) for n in attributes}
except DataError as error:
    st.error(str(error))
    st.stop()

available = [n for n, cls in UNLEARNERS.items()
             if (subject.active is not None or not cls.needs_model) and (len(attributes) == 1 or cls.multi_attribute)]
default = [n for n in (("d2d_r", "leace") if len(attributes) == 1 else ("lego", "joint_d2d")) if n in available]
methods = st.multiselect("Methods to compare", available, default=default, key="unlearn_methods",
                         format_func=lambda n: UNLEARNERS[n].label)
if not methods:
    st.info("Choose at least one method.")
    st.stop()

params = {}
for name in methods:
    with st.expander(f"{UNLEARNERS[name].label}: settings"):
        st.caption(UNLEARNERS[name].description)
        params[name] = hyperparameter_widgets(name, "unlearn")

left, right = st.columns(2)
attackers = tuple(left.multiselect("Attackers for the evaluation", list(ATTACKERS), default=["mlp", "xgboost"],
                                   key="unlearn_attackers", format_func=lambda a: ATTACKERS[a].label))
protocol_name = right.radio("Protocol", ["cv", "shadow"], horizontal=True, key="unlearn_protocol",
                            format_func=lambda p: {"cv": "Balanced 5-fold CV ×3", "shadow": "Shadow split (10%)"}[p])
protocol = CrossValidation() if protocol_name == "cv" else ShadowSplit()
if not attackers:
    st.info("Choose at least one attacker.")
    st.stop()

runs = st.session_state.setdefault(Keys.UNLEARNING_RUNS, {})
context = (subject.key, tuple(attributes), attackers, protocol)
if st.button("Run unlearning", type="primary", key="unlearn_run"):
    bar = st.progress(0.0, text="Unlearning…")
    try:
        results = []
        for i, name in enumerate(methods):
            def scaled(fraction, message, i=i, name=name):
                bar.progress(min(1.0, 0.5 * (i + fraction) / len(methods)), text=f"{UNLEARNERS[name].label}: {message}")
            results.append(cached_unlearning(subject, name, params[name], labels, progress=scaled))
        evaluate_bar = progress_callback(bar)
        comparison = cached_evaluation(subject, results, labels, attackers, protocol,
                                       progress=lambda f, m: evaluate_bar(0.5 + 0.5 * f, f"evaluating: {m}"))
    except (DataError, ValueError) as error:
        st.error(str(error))
        st.stop()
    finally:
        bar.empty()
    kept = runs.setdefault(context, {"original": comparison.rows[0], "runs": []})
    for row in comparison.rows[1:]:
        row_params = row.result.params
        kept["runs"] = [r for r in kept["runs"] if (r.method, r.result.params) != (row.method, row_params)] + [row]

if st.button("Clear the kept runs", key="unlearn_clear"):
    runs.pop(context, None)

kept = runs.get(context)
if not kept or not kept["runs"]:
    st.info("Run one or more methods: every run is kept here for comparison until you clear it.")
    st.stop()

comparison = Comparison((kept["original"], *kept["runs"]))
st.subheader("Side by side")
st.caption("AUC within ±0.05 of 0.5 means the attacker does no better than chance; an AUC far *below* 0.5 is "
           "leakage too (the attacker's guesses are reversed). Runtime is the unlearning alone.")
frame = comparison.to_frame()
st.dataframe(frame, hide_index=True, key="unlearn_table")
st.download_button("Download the comparison (.csv)", frame.to_csv(index=False), file_name="unlearning_comparison.csv",
                   mime="text/csv", key="unlearn_comparison_csv")
for row in kept["runs"]:
    if row.result.notes:
        st.caption(f"{row.label}: {row.result.notes}")

labels_of_runs = [f"{i + 1}. {row.label}" for i, row in enumerate(kept["runs"])]
choice = st.selectbox("Run to inspect", range(len(kept["runs"])), format_func=lambda i: labels_of_runs[i],
                      index=len(kept["runs"]) - 1, key="unlearn_inspect")
run = kept["runs"][choice]
edited = run.result.table.numpy()
attribute = st.selectbox("Attribute", attributes, key="unlearn_attribute")

st.subheader("Embedding distributions before and after")
st.plotly_chart(distribution_figure({"before": subject.table, "after": edited}, labels[attribute]),
                key="unlearn_hist")
st.caption("The dimensions where the groups differed most before unlearning; after, their histograms should "
           "overlap.")
if st.toggle("Show UMAP before and after (the first run takes ~30 s to compile)", key="unlearn_umap"):
    st.plotly_chart(umap_figure({"before": subject.table, "after": edited}, labels[attribute]),
                    key="unlearn_umap_chart")

left, right = st.columns(2)
buffer = io.BytesIO()
np.save(buffer, edited, allow_pickle=False)
left.download_button("Download the edited embeddings (.npy)", buffer.getvalue(), file_name=f"{run.method}.npy",
                     key="unlearn_npy")
csv = pd.DataFrame(edited, columns=[f"dim_{d}" for d in range(edited.shape[1])])
csv.insert(0, "user_index", np.arange(len(edited)))
right.download_button("Download the edited embeddings (.csv)", csv.to_csv(index=False), file_name=f"{run.method}.csv",
                      key="unlearn_csv")

st.subheader("Privacy–utility trade-off")
sweepable = [n for n in methods if UNLEARNERS[n].tradeoff_field and not UNLEARNERS[n].needs_model]
if subject.active is None or not sweepable:
    st.caption("The trade-off needs a trained model (for NDCG) and a method with a trade-off weight.")
    st.stop()
swept = st.selectbox("Method to sweep", sweepable, format_func=lambda n: UNLEARNERS[n].label, key="unlearn_sweep_method")
field = UNLEARNERS[swept].tradeoff_field
centre = params[swept][field]
weights = [centre * f for f in (0.1, 0.3, 1.0, 3.0, 10.0)]
store = st.session_state.setdefault(Keys.UNLEARNING_SWEEPS, {})
sweep_key = (subject.key, swept, tuple(sorted(params[swept].items())), tuple(attributes))
if st.button(f"Sweep {field} over {', '.join(f'{w:g}' for w in weights)}", key="unlearn_sweep"):
    bar = st.progress(0.0, text="Sweeping…")
    store[sweep_key] = tradeoff_sweep(swept, weights, subject.table, labels, subject.active.model,
                                      subject.active.split, params=params[swept], progress=progress_callback(bar))
    bar.empty()
if sweep_key in store:
    original = kept["original"]
    points = pd.DataFrame([{"attribute": s.attribute, "attacker": ATTACKERS[s.attacker].label, "AUC": s.auc,
                            "NDCG@20": original.ranking["NDCG@20"]}
                           for audit in list(original.audits.values())[:1] for s in audit.scores
                           if s.attacker == "mlp"])
    st.plotly_chart(tradeoff_figure(store[sweep_key], points, field), key="unlearn_tradeoff")
    st.caption("Each point is one run at that weight (MLP attacker, 5-fold CV once); the stars are the original.")
