"""Audit page: attack the user representation(s) and show how much each attribute leaks, honestly."""
import streamlit as st

from core.attacks import ATTACKERS, CrossValidation, ShadowSplit
from core.data import DataError
from pages.common import (
    Keys, audit_target, cached_audit, distribution_figure, interval_table, progress_callback, roc_figure,
    umap_figure, verdict_messages,
)

st.title("Audit")
st.caption("Attribute-inference attacks: can a classifier recover each attribute from the user embeddings?")

target = audit_target("audit")
if target is None:
    st.stop()

st.subheader("Attack settings")
left, right = st.columns(2)
attributes = left.multiselect("Attributes", target.attribute_names, default=target.attribute_names, key="audit_attributes")
attackers = right.multiselect("Attackers", list(ATTACKERS), default=["mlp", "xgboost"], key="audit_attackers",
                              format_func=lambda a: ATTACKERS[a].label)
left, right = st.columns(2)
protocol_name = left.radio("Protocol", ["cv", "shadow"], horizontal=True, key="audit_protocol",
                           format_func=lambda p: {"cv": "Balanced 5-fold CV ×3 (strongest)",
                                                  "shadow": "Shadow split"}[p])
fraction = 0.1
if protocol_name == "shadow":
    fraction = right.slider("Share of users the attacker trains on", 0.05, 0.8, 0.1, 0.05, key="audit_fraction")
bins = right.slider("Bins for numeric attributes (quantiles)", 2, 8, 4, key="audit_bins",
                    help="A numeric attribute such as age in years is cut into this many equally full bins.")
protocol = CrossValidation() if protocol_name == "cv" else ShadowSplit(train_fraction=fraction)

if not attributes or not attackers:
    st.info("Choose at least one attribute and one attacker.")
    st.stop()

try:
    labels = target.labels(attributes, bins)
except DataError as error:
    st.error(str(error))
    st.stop()

if st.button("Run the audit", type="primary", key="audit_run"):
    bar = st.progress(0.0, text="Attacking…")
    try:
        results = cached_audit(target, labels, tuple(attackers), protocol, progress=progress_callback(bar))
    except DataError as error:
        st.error(str(error))
        st.stop()
    finally:
        bar.empty()
    st.session_state[Keys.AUDIT_RESULTS] = (target.key, results)

stored = st.session_state.get(Keys.AUDIT_RESULTS)
if not stored or stored[0] != target.key:
    st.stop()
results = stored[1]

st.subheader("Verdicts")
st.caption("Leakage is two-sided: an AUC far *below* 0.5 also means the embedding carries the attribute (the "
           "attacker's guesses are reversed), so it is reported as leakage, never as 'better than random'.")
for name, result in results.items():
    verdict_messages(result, prefix=f"{name}: " if len(results) > 1 else "")
    for note in result.notes:
        st.caption(f"Note: {note}")

st.subheader("Attack results")
st.dataframe(interval_table(results), hide_index=True)
first = next(iter(results.values()))
st.download_button("Download the report (JSON)", "[" + ",".join(r.to_json() for r in results.values()) + "]",
                   file_name="audit.json", mime="application/json")
st.download_button("Download the report (Markdown)", "\n\n".join(r.to_markdown() for r in results.values()),
                   file_name="audit.md", mime="text/markdown")

st.subheader("ROC curves")
chosen = st.selectbox("Attribute", attributes, key="audit_roc_attribute")
for name, result in results.items():
    st.plotly_chart(roc_figure(result, chosen, title=f"{chosen} — {name}"), key=f"roc_{name}")

st.subheader("Embedding distributions by group")
name = st.selectbox("Representation", list(results), key="audit_dist_representation")
table = target.tables[name]
st.plotly_chart(distribution_figure({"": table}, labels[chosen]), key="audit_hist")
st.caption("The dimensions where the groups' means differ most, in pooled standard deviations.")
if st.toggle("Show a 2-D UMAP of the users coloured by group (the first run takes ~30 s to compile)",
             key="audit_umap"):
    st.plotly_chart(umap_figure({"": table}, labels[chosen]), key="audit_umap_chart")
