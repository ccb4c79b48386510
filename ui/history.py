"""The pages' side of the run history: taking a finished job's result into the session, and reopening a kept
training run's model (its weights are kept with the run) as the active model."""
from __future__ import annotations

import streamlit as st

from core.checkpoint import read_metadata
from core.data import MIN_INTERACTIONS, DataError, InteractionDataset, load_dataset
from core.jobs import Job
from core.report import find_runs, render
from core.runstore import RunRecord

from .cache import cached_split, loaded_model, run_store, trained_model
from .jobs import take_result
from .state import ActiveModel, Keys, set_active


def use_training_job() -> Job | None:
    """This tab's training job; once it finished, its model becomes the active model (after a reload too)."""
    def use(job: Job) -> None:
        context = job.context
        set_active(trained_model(context["dataset"], context["split"], job.result))
        st.session_state[Keys.LAST_TRAIN_RESULT] = job.result

    return take_result("train", use)


@st.cache_data(show_spinner="Writing the report…", max_entries=8)
def cached_report(stamp: tuple[tuple[str, str, str | None], ...], fmt: str) -> str:
    """The report of these runs in `fmt`, written once per (run id, status, finish time) stamp: a finished run does
    not change, and the HTML (plotly.js inlined) is several megabytes."""
    return render(find_runs(run_store(), [run_id for run_id, _, _ in stamp]), fmt)


def report_stamp(records) -> tuple[tuple[str, str, str | None], ...]:
    return tuple((r.run_id, r.status, r.finished) for r in records)


@st.cache_resource(show_spinner="Loading the run's data…", max_entries=4)
def _dataset(spec: str, threshold: float | None, kcore: int) -> InteractionDataset:
    return load_dataset(spec, rating_threshold=threshold, k=kcore)


def reopen_model(record: RunRecord) -> ActiveModel:
    """The model kept with a training run, on its data, as the active model; DataError when it cannot be."""
    if record.kind != "training" or "weights.safetensors" not in record.artifacts:
        raise DataError(f"run {record.run_id} ({record.kind}) keeps no model; choose a finished training run")
    spec = record.params.get("data")
    if not spec:
        raise DataError(f"run {record.run_id} trained on uploaded files, which the history does not keep: load them "
                        "again on the Model page and train there")
    folder = run_store().run_folder(record.run_id)
    meta = read_metadata(folder)
    saved = meta.get("dataset", {})
    dataset = _dataset(spec, saved.get("rating_threshold"), int(saved.get("kcore") or MIN_INTERACTIONS))
    split = cached_split(dataset, dataset.fingerprint, int(meta.get("split_seed", 0)))
    active = loaded_model(dataset, split, str(folder))
    active = ActiveModel(active.dataset, active.split, active.model, active.test,
                         f"reopened {record.model} from run {record.run_id} ({record.created[:16].replace('T', ' ')})")
    return set_active(active)
