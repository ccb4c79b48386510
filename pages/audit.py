"""Audit page: attack every user representation and say, per attribute, whether it leaks past the tolerance."""
import streamlit as st

from core.audit import DEFAULT_TOLERANCE, CrossValidation, ShadowSplit, worst_verdicts
from core.recording import audit_fields, audit_params
from core.report import find_runs
from ui.cache import cached_audit, compute_device, labels_key, run_store
from ui.figures import distribution_figure, interval_table, roc_figure, umap_figure, verdict_table
from ui.state import Keys
from ui.targets import audit_target
from ui.history import cached_report, report_stamp
from ui.jobs import job_status, submit, take_result
from ui.widgets import attacker_picker, attribute_labels, auc_explanation, verdict_messages

st.title("Audit")
st.caption("Attribute-inference attacks: can a classifier recover each attribute from the user embeddings?")

target = audit_target("audit")
if target is None:
    st.stop()

# ---------------------------------------------------------------- attributes
st.subheader("Attributes")
left, right = st.columns([3, 1])
attributes = left.multiselect("Attributes", target.attribute_names, default=target.attribute_names,
                              key="audit_attributes")
bins = right.slider("Bins for numeric attributes", 2, 8, 4, key="audit_bins",
                    help="A numeric attribute (such as age in years) is cut into this many equally full bins.")
if not attributes:
    st.info("Choose at least one attribute.")
    st.stop()
labels = attribute_labels("audit", target.attributes, attributes, bins)
if labels is None:
    st.stop()

# ---------------------------------------------------------------- settings
st.subheader("Attack settings")
left, right = st.columns(2)
with left:
    attackers = attacker_picker("audit")
protocol_name = right.radio("Protocol", ["cv", "shadow"], horizontal=True, key="audit_protocol",
                            format_func=lambda p: {"cv": f"{CrossValidation().label} (every labelled user; strongest)",
                                                   "shadow": "Shadow split"}[p])
fraction = 0.1
if protocol_name == "shadow":
    fraction = right.slider("Share of users the attacker trains on", 0.05, 0.8, 0.1, 0.05, key="audit_fraction")
tolerance = right.number_input(
    "Tolerance |AUC − 0.5|", min_value=0.0, max_value=0.5, value=DEFAULT_TOLERANCE, step=0.01, format="%.3f",
    key="audit_tolerance", help="The gap from chance a privacy officer accepts, on either side of 0.5: an attribute "
                                "leaks when an attacker's AUC is farther than this from 0.5, beyond chance.")
protocol = CrossValidation() if protocol_name == "cv" else ShadowSplit(train_fraction=fraction)
if not attackers:
    st.info("Choose at least one attacker.")
    st.stop()

settings = (target.key, labels_key(labels), attackers, protocol, float(tolerance))
if st.button("Run the audit", type="primary", key="audit_run"):
    # a background job, recorded in the history (with the model's test NDCG@20, for the privacy-utility chart)
    active = target.active
    dataset = ({"dataset": active.dataset.name, "fingerprint": active.dataset.fingerprint} if active else
               {"dataset": "uploaded embeddings", "fingerprint": target.key.rsplit(":", 1)[-1]})
    submit("audit", settings, lambda progress, cancel: cached_audit(target, labels, attackers, protocol, tolerance,
                                                                    progress=progress),
           "Attacking", context={"target": target.key, "settings": settings, "labels": labels},
           finish=lambda results, run_ids: audit_fields(results, active.test if active else None),
           record={"kind": "audit", "label": f"audit of {active.model.label if active else 'uploaded embeddings'}",
                   "model": active.origin if active else ", ".join(target.tables), "attributes": list(labels),
                   "params": audit_params(attackers, protocol, tolerance), "device": str(compute_device()),
                   "source": "app", **dataset})


def _use_audit(job) -> None:
    st.session_state[Keys.AUDIT_RESULTS] = {**job.context, "results": job.result, "run_ids": job.run_ids}


job_status(take_result("audit", _use_audit), "The audit")

stored = st.session_state.get(Keys.AUDIT_RESULTS)
if not stored or stored["target"] != target.key:
    st.stop()
if stored["settings"] != settings:
    st.info("The settings changed since this audit ran: run it again to update the results below.")
results, audited_labels = stored["results"], stored["labels"]
verdicts = worst_verdicts(results)
several = len(results) > 1

# ---------------------------------------------------------------- verdicts
st.subheader("Verdicts")
st.caption(auc_explanation(next(iter(verdicts.values())).tolerance))
verdict_messages(verdicts, several)
st.dataframe(verdict_table(verdicts, audited_labels), hide_index=True)
if several:
    st.caption(f"Each attribute's headline is the representation that leaks most of the {len(results)} audited "
               f"({', '.join(results)}); p-values are corrected over all of them, and every one is in the table below.")
for name, result in results.items():
    for note in result.notes:
        st.caption(f"Note ({name}): {note}" if several else f"Note: {note}")

st.subheader("Attack results")
st.dataframe(interval_table(results), hide_index=True)
kept = [run_id for run_id in stored.get("run_ids", ()) if run_id in {r.run_id for r in run_store().records("audit")}]
left, middle, right = st.columns(3)
if kept:  # the recorded run: dataset and fingerprint, model, date, device, versions, protocol, verdicts in words
    stamp = report_stamp(find_runs(run_store(), kept))
    left.download_button("Download the report (HTML, opens offline)", cached_report(stamp, "html"),
                         file_name="audit-report.html", mime="text/html", key="audit_report_html")
    middle.download_button("Download the report (JSON)", cached_report(stamp, "json"), file_name="audit-report.json",
                           mime="application/json", key="audit_report_json")
right.download_button("Download the attack tables (Markdown)", "\n\n".join(r.to_markdown() for r in results.values()),
                      file_name="audit.md", mime="text/markdown", key="audit_report_md")

st.subheader("ROC curves")
chosen = st.selectbox("Attribute", list(audited_labels), key="audit_roc_attribute")
for name, result in results.items():
    st.plotly_chart(roc_figure(result, chosen, title=f"{chosen} — {name}"), key=f"roc_{name}")

st.subheader("Embedding distributions by group")
name = st.selectbox("Representation", list(results), key="audit_dist_representation")
table = target.tables[name]
st.plotly_chart(distribution_figure({"": table}, audited_labels[chosen]), key="audit_hist")
st.caption("The dimensions where the groups' means differ most, in pooled standard deviations.")
if st.toggle("Show a 2-D UMAP of the users coloured by group (the first run takes ~30 s to compile)",
             key="audit_umap"):
    st.plotly_chart(umap_figure({"": table}, audited_labels[chosen]), key="audit_umap_chart")
