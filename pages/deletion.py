"""Deletion page: make the active model forget interactions, users or items with one or several methods, compare
them with Retrain (accuracy, completeness, cost), and save or audit an updated model. The run is a background job
(progress, elapsed time, Cancel; found again after a page switch or reload) recorded in the run history."""
import time

import streamlit as st

from core.data import DataError
from core.metrics import evaluate_full
from core.recording import deletion_fields, deletion_start
from core.unlearning.deletion import DELETERS, Tolerance, make_deleter, run_deletion
from core.unlearning.deletion.saved import model_meta, save_deleted_model
from ui.cache import compute_device
from ui.deletion import (
    DEFAULT_METHODS, comparison_frame, completeness_figure, method_label, method_settings, rank_figure, request_picker,
)
from ui.jobs import job_status, submit, take_result
from ui.state import ActiveModel, Keys, require_model, set_active

st.title("Deletion")
st.caption("A user asks to be forgotten, or some interactions must go: update the model, then show how completely it "
           "forgot, beside retraining from scratch without them (the gold standard), and at what cost.")

active = require_model()
if active is None:
    st.stop()
model, split = active.model, active.split

# ---------------------------------------------------------------- request
st.subheader("1. What to forget")
try:
    request = request_picker(split)
except DataError as error:
    st.error(f"This request cannot be used: {error}")
    st.stop()
if request is None:
    st.stop()
st.caption(request.summary() + ". Forgotten users' and items' held-out interactions leave the test set too.")

# ---------------------------------------------------------------- methods
st.subheader("2. Methods")
available = [n for n in DELETERS if make_deleter(n).applies(model)]
chosen = st.multiselect("Methods to compare", available, default=[n for n in DEFAULT_METHODS if n in available],
                        format_func=method_label, key="delete_methods")
st.caption(f"Retrain always runs: every completeness figure is judged against it. Not available for {model.label}: "
           + (", ".join(method_label(n) for n in DELETERS if n not in available) or "none") + ".")
params = {}
for name in chosen:
    with st.expander(f"{method_label(name)}: settings"):
        st.caption(DELETERS[name].description)
        params[name] = method_settings(name)

# ---------------------------------------------------------------- run
last = st.session_state.get(Keys.LAST_TRAIN_RESULT)
train_config = last.config if last is not None and last.model is model else None
context = (id(model), request.description, request.n_pairs, tuple(chosen), tuple(sorted((n, tuple(sorted(p.items())))
                                                                                       for n, p in params.items())))
if st.button("Run deletion", type="primary", key="delete_run", disabled=not chosen):
    methods = [make_deleter(n, **params[n]) for n in chosen]
    device = compute_device()

    def forget(progress, cancel):
        """Every method (Retrain first), then the one comparison; on a worker thread, timed as a whole."""
        began = time.perf_counter()
        report = run_deletion(model, request, methods, progress=progress, device=device, train_config=train_config)
        return report, time.perf_counter() - began

    # one run in the history: the request in counts (never the forgotten ids), the table, each method's verdict
    submit("deletion", context, forget, "Deletion", context={"context": context, "request": request},
           record=deletion_start(request, methods, Tolerance(), active.origin, device, active.dataset, "app"),
           finish=lambda result, run_ids: deletion_fields(*result))


def _keep_run(job) -> None:
    st.session_state[Keys.DELETION_RUN] = {**job.context, "report": job.result[0]}


job_status(take_result("deletion", _keep_run), "Deletion")

run = st.session_state.get(Keys.DELETION_RUN)
if run is None:
    st.info("Choose the methods and press **Run deletion**.")
    st.stop()
report = run["report"]
if run["context"] != context:
    st.warning("The results below are for earlier settings: run again to update them.")

# ---------------------------------------------------------------- comparison
st.subheader("3. Side by side")
st.caption(f"{report.request}. Verdict: {report.tolerance.describe()}. Seconds: the update alone (evaluation "
           f"excluded), measured in this process on {report.device}; speed-up = Retrain's seconds / the method's. "
           "Accuracy on the test split without the forgotten data; every number from the model's own scoring "
           "function (LightUL-style's Ω included).")
frame = comparison_frame(report)
st.dataframe(frame, hide_index=True, key="delete_table")
st.download_button("Download the comparison (.csv)", frame.to_csv(index=False), file_name="deletion_comparison.csv",
                   mime="text/csv", key="delete_csv")
st.plotly_chart(completeness_figure(report), key="delete_completeness_chart")
st.caption("Closer to Retrain is better. A higher forgotten-vs-retained AUC means forgotten pairs score below retained "
           "ones; far above Retrain's is over-forgetting, which also harms those users. Forget hit rate: share of "
           "forgotten pairs still in the user's top 20. MIA AUC: a membership attacker's AUC for forgotten pairs "
           "against never-seen ones (0.5 = they look never seen).")
st.plotly_chart(rank_figure(report), key="delete_rank_chart")

# ---------------------------------------------------------------- save / audit
st.subheader("4. Keep an updated model")
rows = {row.method: row for row in report.rows[1:]}
keep = st.selectbox("Updated model", list(rows), format_func=lambda m: rows[m].label, key="delete_keep")
left, right = st.columns(2)
folder = left.text_input("Folder to save it in", value=f"models/deleted_{keep}", key="delete_folder")
if left.button("Save the updated model", key="delete_save"):
    written = save_deleted_model(folder, rows[keep].result, model_meta(model, active.dataset, split.seed),
                                 run["request"], rows[keep].accuracy)
    left.success(f"Saved to {written}: load it on the Model page like any trained model.")
if right.button("Audit it: make it the active model", key="delete_activate"):
    updated = rows[keep].result.model
    test = evaluate_full(updated.scorer(), split, "test", device=compute_device())
    set_active(ActiveModel(active.dataset, split, updated, test,
                           f"{rows[keep].label} after forgetting {run['request'].description}"))
    right.success("It is now the active model: open the Audit page to audit it.")
