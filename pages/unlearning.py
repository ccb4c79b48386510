"""Unlearning page: edit the user table so chosen attributes can no longer be inferred, and compare methods."""
import pandas as pd
import streamlit as st

from core.audit import ATTACKERS, DEFAULT_TOLERANCE, CrossValidation, ShadowSplit
from core.evaluation import Comparison
from core.unlearning.attribute import UNLEARNERS, transport_hint
from core.recording import audit_params, unlearning_fields
from ui.cache import cached_evaluation, cached_unlearning, compute_device, labels_key, run_sweep
from ui.figures import NDCG_EXPLANATION, comparison_table, distribution_figure, tradeoff_figure, umap_figure
from ui.jobs import job_status, submit, take_result
from ui.state import Keys
from ui.targets import edited_downloads, unlearning_subject
from ui.widgets import (
    attacker_picker, attribute_labels, auc_explanation, has_target, hyperparameter_widgets, progress_callback,
)

st.title("Unlearning")
st.caption("Edit the user embeddings so that the chosen attributes can no longer be inferred, keep the "
           "recommendations, and compare methods side by side.")

subject = unlearning_subject("unlearn")
if subject is None:
    st.stop()

# ---------------------------------------------------------------- attributes
names = subject.attribute_names
attributes = st.multiselect("Attributes to forget", names, default=names[:1], key="unlearn_attributes")
if not attributes:
    st.info("Choose at least one attribute.")
    st.stop()
labels = attribute_labels("unlearn", subject.attributes, attributes)
if labels is None:
    st.stop()

# ---------------------------------------------------------------- methods
st.subheader("Methods")
target = st.number_input(
    "Target |AUC − 0.5|", min_value=0.0, max_value=0.2, value=DEFAULT_TOLERANCE, step=0.01, format="%.3f",
    key="unlearn_target",
    help="Methods with a target (D2D-R, LEGO-style, joint and sequential D2D-R, U2U-R closed form) search their "
         "strength until the full audit (default attackers, every representation the model serves with) verifies "
         "|AUC − 0.5| ≤ this on both sides of 0.5; that takes seconds to a minute on 1,000 users. 0 = fixed "
         "strength (the settings below). The linear eraser and the in-training baselines have no target.")
available = [n for n, cls in UNLEARNERS.items()
             if (subject.active is not None or not cls.needs_model) and (len(attributes) == 1 or cls.multi_attribute)]
mode = "multi" if len(attributes) > 1 else "single"
default = [n for n in (("d2d_r", "leace") if mode == "single" else ("lego", "joint_d2d")) if n in available]
chosen = st.session_state.get("unlearn_methods")
if st.session_state.get(Keys.UNLEARNING_METHODS_MODE) != mode or chosen is None or not set(chosen) <= set(available):
    # one attribute <-> several: preselect the methods made for that case (LEGO-style and joint D2D-R for several)
    st.session_state["unlearn_methods"] = default
    st.session_state[Keys.UNLEARNING_METHODS_MODE] = mode
methods = st.multiselect("Methods to compare", available, key="unlearn_methods",
                         format_func=lambda n: UNLEARNERS[n].label)
if mode == "multi":
    st.caption("Several attributes: LEGO-style (cached per-attribute calibrations, reused when you add or drop an "
               "attribute) and joint D2D-R are preselected.")

# ---------------------------------------------------------------- evaluation settings
st.subheader("Evaluation")
left, right = st.columns(2)
with left:
    attackers = attacker_picker("unlearn")
protocol_name = right.radio("Protocol", ["cv", "shadow"], horizontal=True, key="unlearn_protocol",
                            format_func=lambda p: {"cv": CrossValidation().label, "shadow": "Shadow split (10%)"}[p])
protocol = CrossValidation() if protocol_name == "cv" else ShadowSplit()
tolerance = float(target) if target > 0 else DEFAULT_TOLERANCE
right.caption(f"Verdicts compare each attribute's worst |AUC − 0.5| over the attackers and representations with "
              f"{tolerance:.3f} (the target).")

# ---------------------------------------------------------------- each method's settings
# after the evaluation widgets, so that adding or dropping a method (an expander more or less) never moves them: once
# in CI the attackers radio, moved by a method change, came back at its default in the browser
params = {}
for name in methods:
    targeted = has_target(name)
    with st.expander(f"{UNLEARNERS[name].label}: settings"):
        st.caption(UNLEARNERS[name].description)
        if targeted and target > 0:
            st.caption(f"Aims at the target set above: |AUC − 0.5| ≤ {target:.3f}, verified by the full audit with a margin "
                       "for what one more audit on other folds could find.")
        elif targeted:
            st.caption("Target 0: runs at the fixed strength set here.")
        else:
            st.caption("No target: runs at the fixed strength set here.")
        params[name] = hyperparameter_widgets(name, "unlearn", fixed={"target_gap": float(target)} if targeted else None)

if not methods:
    st.info("Choose at least one method.")
    st.stop()
if not attackers:
    st.info("Choose at least one attacker.")
    st.stop()

runs = st.session_state.setdefault(Keys.UNLEARNING_RUNS, {})
context = (subject.key, labels_key(labels), attackers, protocol, tolerance)
if st.button("Run unlearning", type="primary", key="unlearn_run"):
    chosen_methods, chosen_params = list(methods), {n: dict(params[n]) for n in methods}

    def unlearn(progress, cancel):
        """Every chosen method (60% of the bar), then the before/after evaluation; on a worker thread."""
        results = []
        for i, name in enumerate(chosen_methods):
            def scaled(fraction, message, i=i, name=name):
                progress(0.6 * (i + fraction) / len(chosen_methods), f"{UNLEARNERS[name].label}: {message}")
            results.append(cached_unlearning(subject, name, chosen_params[name], labels, progress=scaled))
        return cached_evaluation(subject, results, labels, attackers, protocol, tolerance,
                                 progress=lambda f, m: progress(0.6 + 0.4 * f, f"evaluating: {m}"))

    active = subject.active
    data = ({"dataset": active.dataset.name, "fingerprint": active.dataset.fingerprint} if active else
            {"dataset": "uploaded embeddings", "fingerprint": subject.key.rsplit(":", 1)[-1]})
    # one run in the history per method, each with the original's numbers beside its own
    submit("unlearn", (context, tuple((n, tuple(sorted(chosen_params[n].items()))) for n in chosen_methods)),
           unlearn, "Unlearning", context=context,
           finish=lambda comparison, run_ids: [unlearning_fields(row, comparison.rows[0])
                                               for row in comparison.rows[1:]],
           record=[{"kind": "unlearning", "label": UNLEARNERS[n].label, "attributes": list(labels),
                    "model": active.origin if active else "uploaded embeddings", "device": str(compute_device()),
                    "params": {"method": n, **chosen_params[n], **audit_params(attackers, protocol, tolerance)},
                    "source": "app", **data} for n in chosen_methods])


def _keep_runs(job) -> None:
    comparison = job.result
    kept = runs.setdefault(job.context, {"original": comparison.rows[0], "runs": []})
    for row in comparison.rows[1:]:
        row_params = row.result.params
        kept["runs"] = [r for r in kept["runs"] if (r.method, r.result.params) != (row.method, row_params)] + [row]


last = take_result("unlearn", _keep_runs)
job_status(last, "Unlearning")

if st.button("Clear the kept runs", key="unlearn_clear"):
    runs.pop(context, None)

kept = runs.get(context)
if not kept or not kept["runs"]:
    if last is not None and last.status == "finished" and last.context != context and last.context in runs:
        st.info("The last run was evaluated under other settings (attributes, attackers, protocol or target); its "
                "results show again when those settings are chosen.")
    st.info("Run one or more methods: every run is kept here for comparison until you clear it.")
    st.stop()

# ---------------------------------------------------------------- comparison
comparison = Comparison((kept["original"], *kept["runs"]))
st.subheader("Side by side")
st.caption(auc_explanation(tolerance) + " Here the verdict compares the gap with the target (no permutation test); "
           "'target reached' is the method's own check with the full audit. Runtime is the unlearning alone. "
           + NDCG_EXPLANATION + " Unlearning should keep it close to the original's.")
frame = comparison_table(comparison)
st.dataframe(frame, hide_index=True, key="unlearn_table")
st.download_button("Download the comparison (.csv)", frame.to_csv(index=False), file_name="unlearning_comparison.csv",
                   mime="text/csv", key="unlearn_comparison_csv")
for row in kept["runs"]:
    if row.result.notes:
        st.caption(f"**{row.label}**: {row.result.notes}")
if hint := transport_hint([row.result for row in kept["runs"]]):
    st.info(hint)

labels_of_runs = [f"{i + 1}. {row.label}" for i, row in enumerate(kept["runs"])]
choice = st.selectbox("Run to inspect", range(len(kept["runs"])), format_func=lambda i: labels_of_runs[i],
                      index=len(kept["runs"]) - 1, key="unlearn_inspect")
run = kept["runs"][choice]
edited = run.result.table.numpy()
log = run.result.details.get("log")
if log:
    with st.expander("How the target was searched"):
        st.code("\n".join(log), language=None)
attribute = st.selectbox("Attribute", attributes, key="unlearn_attribute")

st.subheader("Embedding distributions before and after")
st.plotly_chart(distribution_figure({"before": subject.table, "after": edited}, labels[attribute]),
                key="unlearn_hist")
st.caption("The dimensions where the groups differed most before unlearning; after, their histograms should "
           "overlap.")
if st.toggle("Show UMAP before and after (the first run takes ~30 s to compile)", key="unlearn_umap"):
    st.plotly_chart(umap_figure({"before": subject.table, "after": edited}, labels[attribute]),
                    key="unlearn_umap_chart")

# the edited table with its users' ids, in a chosen format, and the attributes with the same ids: the pair uploads
# back (Assess page, or python -m core audit) to the same numbers
edited_downloads("unlearn", edited, subject.user_ids, subject.attributes, run.method)

# ---------------------------------------------------------------- trade-off
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
sweep_key = (subject.key, swept, tuple(sorted(params[swept].items())), labels_key(labels), attackers)
if st.button(f"Sweep {field} over {', '.join(f'{w:g}' for w in weights)}", key="unlearn_sweep"):
    bar = st.progress(0.0, text="Sweeping…")
    try:
        store[sweep_key] = run_sweep(subject, swept, weights, labels, params[swept], attackers,
                                     progress=progress_callback(bar))
    finally:
        bar.empty()
if sweep_key in store:
    original = kept["original"]
    points = pd.DataFrame([{"attribute": s.attribute, "attacker": ATTACKERS[s.attacker].label, "AUC": s.auc,
                            "NDCG@20": original.ranking["NDCG@20"]}
                           for audit in list(original.audits.values())[:1] for s in audit.scores])
    st.plotly_chart(tradeoff_figure(store[sweep_key], points, field), key="unlearn_tradeoff")
    st.caption("Each point is one run at that weight at fixed strength (no target search), audited on the edited "
               "table with 5-fold CV once; the stars are the original.")
