"""History & Compare: every kept run (from the pages and the command line) in a filterable table; runs side by side
with charts; reports to download; a run deleted with its files; a kept model reopened on the Audit page."""
import pandas as pd
import streamlit as st

from core.data import DataError
from core.report import (
    AUC_EXPLANATION, DELETION_EXPLANATION, GAP_EXPLANATION, NDCG_EXPLANATION, VERDICT_WORDS, auc_ndcg_figure,
    comparison_frame, find_runs, runtime_figure,
)
from ui.cache import run_store
from ui.history import cached_report, reopen_model, report_stamp

st.title("History & Compare")
store = run_store()
st.caption(f"Every training, audit, unlearning and deletion run, from this dashboard or from `python -m core`, kept in "
           f"{store.location}. A run still going shows as running; one whose server or command was stopped shows as "
           "interrupted.")

records = store.records()
if not records:
    st.info("No runs yet: train a model on the **Model** page, or run `python -m core audit …`; each run is kept here.")
    st.stop()

# ---------------------------------------------------------------- filters and the table
left, middle, right = st.columns([2, 2, 3])
kinds = sorted({r.kind for r in records})
chosen_kinds = left.multiselect("Kind", kinds, default=kinds, key="history_kinds")
statuses = sorted({r.status for r in records})
chosen_statuses = middle.multiselect("Status", statuses, default=statuses, key="history_statuses")
text = right.text_input("Search (label, dataset, model, attribute or run id)", key="history_search").strip().lower()


def matches(record) -> bool:
    haystack = " ".join([record.run_id, record.label, record.dataset, record.model, *record.attributes]).lower()
    return record.kind in chosen_kinds and record.status in chosen_statuses and (not text or text in haystack)


shown = [r for r in reversed(records) if matches(r)]  # newest first
st.dataframe(comparison_frame(shown), hide_index=True, key="history_table")
st.caption(f"{len(shown)} of {len(records)} runs. The verdict is the worst over the run's attributes: "
           + "; ".join(f"*{k}* = {VERDICT_WORDS[k]}" for k in ("leaks", "inconclusive", "no leak")) + "."
           + (" A deletion run's verdicts are its methods' (matches Retrain, under-forgets, over-forgets): pick it "
              "under *One run* for its table." if any(r.kind == "deletion" for r in shown) else ""))
if not shown:
    st.stop()

# ---------------------------------------------------------------- side by side
st.subheader("Side by side")
labels = {r.run_id: f"{r.label} · {r.kind} · {r.created[:16].replace('T', ' ')} · {r.status} · {r.run_id[:6]}"
          for r in shown}
finished = [r.run_id for r in shown if r.status == "finished"]
picked = st.multiselect("Runs to compare", list(labels), default=finished[:3], format_func=labels.get,
                        key="history_compare")
if picked:
    chosen = find_runs(store, picked)
    st.dataframe(comparison_frame(chosen), hide_index=True, key="history_compare_table")
    st.caption(f"{AUC_EXPLANATION} {GAP_EXPLANATION} {NDCG_EXPLANATION}")
    left, right = st.columns(2)
    tradeoff = auc_ndcg_figure(chosen)
    if tradeoff is not None:
        left.plotly_chart(tradeoff, key="history_tradeoff")
    else:
        left.caption("The AUC-against-NDCG chart needs runs with both (audits of a model, unlearning runs).")
    runtime = runtime_figure(chosen)
    if runtime is not None:
        right.plotly_chart(runtime, key="history_runtime")

    stamp = report_stamp(chosen)
    st.write("Download the report of these runs (the HTML file opens with no network: its charts are embedded):")
    columns = st.columns(3)
    for column, (fmt, mime) in zip(columns, (("html", "text/html"), ("json", "application/json"), ("csv", "text/csv"))):
        column.download_button(f"Report (.{fmt})", cached_report(stamp, fmt), file_name=f"privacy-report.{fmt}", mime=mime,
                               key=f"history_report_{fmt}")

# ---------------------------------------------------------------- one run
st.subheader("One run")
run_id = st.selectbox("Run", list(labels), format_func=labels.get, key="history_run")
record = store.get(run_id)
facts = {"dataset": f"{record.dataset} (fingerprint {record.fingerprint or 'not recorded'})", "model": record.model,
         "attributes": ", ".join(record.attributes), "device": record.device,
         "runtime": "" if record.seconds is None else f"{record.seconds:.2f} s", "recorded from": record.source,
         "protocol": record.results.get("protocol", ""), "artifacts": ", ".join(record.artifacts),
         "parameters": ", ".join(f"{k} = {v}" for k, v in record.params.items())}
st.dataframe(pd.DataFrame({"": list(facts), "value": [str(v) for v in facts.values()]}), hide_index=True,
             key="history_facts")
if record.message:
    st.warning(f"{record.status.capitalize()}: {record.message}")
for attribute, verdict in record.verdicts.items():
    st.write(f"**{attribute}**: {verdict.get('explanation') or VERDICT_WORDS.get(verdict.get('status', ''), '')}")
if record.kind == "deletion" and record.results.get("tables", {}).get("comparison"):
    st.dataframe(pd.DataFrame(record.results["tables"]["comparison"]).drop(columns=["device"], errors="ignore"),
                 hide_index=True, key="history_deletion_table")
    st.caption(f"Each method beside Retrain: {DELETION_EXPLANATION} Verdicts: "
               + "; ".join(f"*{k}* = {VERDICT_WORDS[k]}" for k in ("matches Retrain", "under-forgets", "over-forgets"))
               + ".")

left, right = st.columns(2)
if record.kind == "training" and "weights.safetensors" in record.artifacts:
    if left.button("Open this model on the Audit page", key="history_reopen", type="primary"):
        try:
            reopen_model(record)
        except DataError as error:
            left.error(str(error))
        else:
            st.switch_page("pages/audit.py")
confirm = right.checkbox("I want to delete this run and its files", key="history_delete_confirm")
if right.button("Delete the run", key="history_delete", disabled=not confirm):
    store.delete(record.run_id)
    st.session_state.pop("history_delete_confirm", None)
    st.rerun()
