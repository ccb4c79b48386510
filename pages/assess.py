"""Assess page: upload your own user embeddings and attributes, see what was read and how the rows were matched,
audit them, remove the leaking attributes with a method that needs no recommender, and download the result."""
import streamlit as st

from core.audit import DEFAULT_TOLERANCE, CrossValidation, worst_verdicts
from core.data import DataError, encode_attribute
from core.unlearning.attribute import UNLEARNERS
from ui.cache import cached_audit, cached_evaluation, cached_unlearning, labels_key
from ui.figures import comparison_table, interval_table, verdict_table
from ui.state import Keys
from ui.targets import UnlearningSubject, edited_downloads, external_model, sample_files, uploaded_target
from ui.widgets import (
    attacker_picker, attribute_labels, auc_explanation, has_target, hyperparameter_widgets, progress_callback,
    verdict_messages,
)

st.title("Assess")
st.caption("Audit your own user embeddings (from any recommender) against an attributes table, and remove what "
           "leaks. Rows are matched to attributes by user id; files without ids only by position, and only when "
           "you say so.")

# ---------------------------------------------------------------- files
with st.expander("No files at hand? Try a sample pair from the built-in demo"):
    embeddings_sample, attributes_sample = sample_files()
    st.caption("User embeddings (a 32-dimensional SVD of the demo's interactions, rows shuffled, with a user_id "
               "column) and the demo's attributes (gender, age, occupation), which the demo plants in users' tastes.")
    left, middle, right = st.columns(3)
    left.download_button("Sample embeddings (.csv)", embeddings_sample, file_name="sample_embeddings.csv",
                         mime="text/csv", key="assess_sample_embeddings")
    middle.download_button("Sample attributes (.csv)", attributes_sample, file_name="sample_attributes.csv",
                           mime="text/csv", key="assess_sample_attributes")
    if right.button("Use the sample pair", key="assess_use_sample"):
        st.session_state[Keys.UPLOAD_EMBEDDINGS] = ("sample_embeddings.csv", embeddings_sample)
        st.session_state[Keys.UPLOAD_EMBEDDING_ATTRIBUTES] = ("sample_attributes.csv", attributes_sample)

target = uploaded_target("assess")
if target is None:
    st.stop()
table = next(iter(target.tables.values()))
external = external_model("assess")  # optional: the item table and interactions, for NDCG/HR

# ---------------------------------------------------------------- attributes
st.subheader("Attributes")
names = target.attribute_names
if not names:
    st.error("No attribute column has two or more values; an audit needs at least one that varies.")
    st.stop()
left, right = st.columns([3, 1])
attributes = left.multiselect("Attributes", names, default=names, key="assess_attributes")
bins = right.slider("Bins for numeric attributes", 2, 8, 4, key="assess_bins",
                    help="A numeric attribute (such as age in years) is cut into this many equally full bins.")
if not attributes:
    st.info("Choose at least one attribute.")
    st.stop()
labels = attribute_labels("assess", target.attributes, attributes, bins)
if labels is None:
    st.stop()

# ---------------------------------------------------------------- audit
st.subheader("Audit")
left, right = st.columns(2)
with left:
    attackers = attacker_picker("assess")
tolerance = right.number_input(
    "Tolerance |AUC − 0.5|", min_value=0.0, max_value=0.5, value=DEFAULT_TOLERANCE, step=0.01, format="%.3f",
    key="assess_tolerance", help="An attribute leaks when an attacker's AUC is farther than this from 0.5, beyond "
                                 "chance (5-fold cross-validation over every labelled user).")
if not attackers:
    st.info("Choose at least one attacker.")
    st.stop()
protocol = CrossValidation()
settings = (target.key, labels_key(labels), attackers, float(tolerance))
if st.button("Run the audit", type="primary", key="assess_run"):
    bar = st.progress(0.0, text="Attacking…")
    try:
        results = cached_audit(target, labels, attackers, protocol, tolerance, progress=progress_callback(bar))
    except DataError as error:
        st.error(str(error))
        st.stop()
    finally:
        bar.empty()
    st.session_state[Keys.ASSESS_AUDIT] = {"settings": settings, "results": results, "labels": labels}

stored = st.session_state.get(Keys.ASSESS_AUDIT)
if stored and stored["settings"][0] == target.key:
    if stored["settings"] != settings:
        st.info("The settings changed since this audit ran: run it again to update the results below.")
    results = stored["results"]
    verdicts = worst_verdicts(results)
    st.caption(auc_explanation(next(iter(verdicts.values())).tolerance))
    verdict_messages(verdicts, False)
    st.dataframe(verdict_table(verdicts, stored["labels"]), hide_index=True, key="assess_verdicts")
    st.dataframe(interval_table(results), hide_index=True, key="assess_attacks")
    st.download_button("Download the report (JSON)", "[" + ",".join(r.to_json() for r in results.values()) + "]",
                       file_name="audit.json", mime="application/json", key="assess_report")

# ---------------------------------------------------------------- unlearning
st.subheader("Remove the leakage")
available = [n for n, cls in UNLEARNERS.items() if not cls.needs_model and (len(labels) == 1 or cls.multi_attribute)]
st.caption("Methods that edit the embeddings alone (those that retrain a recommender need the Model page). "
           + ("NDCG/HR before and after come from the uploaded item table and interactions." if external else
              "Ranking quality is measured only with the recommender's item table and interactions (above)."))
preferred = "d2d_r" if len(labels) == 1 else "lego"
method = st.selectbox("Method", available, index=available.index(preferred) if preferred in available else 0,
                      key="assess_method", format_func=lambda n: UNLEARNERS[n].label)
target_gap = st.number_input("Target |AUC − 0.5|", min_value=0.0, max_value=0.2, value=DEFAULT_TOLERANCE, step=0.01,
                             format="%.3f", key="assess_target",
                             help="Methods with a target search their strength until the full audit verifies it; "
                                  "0 = the fixed strength below.")
with st.expander(f"{UNLEARNERS[method].label}: settings"):
    st.caption(UNLEARNERS[method].description)
    params = hyperparameter_widgets(method, "assess",
                                    fixed={"target_gap": float(target_gap)} if has_target(method) else None)
if external is None:
    subject = UnlearningSubject(target.key, table, target.attributes, user_ids=target.user_ids)
else:  # the model's user table, in the order of its interactions' users, with the attributes aligned to it
    model_table = external.model.user_table().cpu().numpy()
    subject = UnlearningSubject("external:" + target.key + ":" + str(external.dataset.fingerprint), model_table,
                                external.dataset.attributes, external, external.dataset.user_ids)
    try:  # the same attributes and types, on the model's rows
        labels = {n: encode_attribute(external.dataset.attributes[n], n, n_bins=bins, kind=label.kind)
                  for n, label in labels.items()}
    except DataError as error:
        st.error(f"The attributes cannot be matched with the model's users: {error}")
        st.stop()
edit_settings = (subject.key, method, tuple(sorted(params.items())), labels_key(labels), attackers, float(tolerance))
if st.button("Unlearn", type="primary", key="assess_unlearn"):
    bar = st.progress(0.0, text="Unlearning…")
    try:
        result = cached_unlearning(subject, method, params, labels,
                                   progress=lambda f, m: bar.progress(min(1.0, 0.6 * f), text=m))
        comparison = cached_evaluation(subject, [result], labels, attackers, protocol, tolerance,
                                       progress=lambda f, m: bar.progress(min(1.0, 0.6 + 0.4 * f), text=m))
    except (DataError, ValueError) as error:
        st.error(str(error))
        st.stop()
    finally:
        bar.empty()
    st.session_state[Keys.ASSESS_EDITED] = {"settings": edit_settings, "result": result, "comparison": comparison}

edited = st.session_state.get(Keys.ASSESS_EDITED)
if not edited or edited["settings"][0] != subject.key:
    st.stop()
if edited["settings"] != edit_settings:
    st.info("The settings changed since this run: run it again to update the results below.")
st.dataframe(comparison_table(edited["comparison"]), hide_index=True, key="assess_comparison")
if edited["result"].notes:
    st.caption(f"**{edited['result'].label}**: {edited['result'].notes}")
st.caption("The download keeps each row's user id (except .npy, which holds none), so it uploads back here, or to "
           "python -m core audit, with the same numbers.")
edited_downloads("assess", edited["result"].table.numpy(), subject.user_ids, subject.attributes,
                 edited["result"].method)
