"""Model page: choose data and a recommender, train it (or load a saved one), see data statistics and quality."""
import pandas as pd
import streamlit as st

from core.data import MIN_INTERACTIONS, DataError, default_ml100k_dir
from core.models import MODEL_INFO
from core.training import DEFAULT_LR, TrainConfig
from core.checkpoint import save_model
from core.recording import dataset_fields, save_trained, training_fields, training_params
from ui.cache import (
    cached_dataset, cached_split, cached_training, compute_device, loaded_model, run_store,
)
from ui.data import DATA_SOURCES, DEMO, MOVIELENS, UPLOAD
from ui.figures import NDCG_EXPLANATION, ranking_table, training_figure
from ui.state import Keys, active_model, set_active
from ui.targets import model_exports, upload_limit_text
from ui.history import use_training_job
from ui.jobs import job_status, submit

st.title("Model")
st.caption("Load interactions, train a recommender or load a saved one, and check its ranking quality.")

# ---------------------------------------------------------------- data
st.subheader("1. Data")
source = st.radio("Data source", DATA_SOURCES, horizontal=True, key="model_data_source")
folder, threshold = "", None
if source == MOVIELENS:
    default_folder = default_ml100k_dir()
    folder = st.text_input("Folder containing u.data and u.user", value=str(default_folder or ""))
if source == UPLOAD:
    st.caption(upload_limit_text() + " An interactions CSV may carry its own split column (train/test[/valid]); "
               "it is then used as given.")
    interactions_file = st.file_uploader("Interactions CSV (user, item[, rating, timestamp])", type=["csv", "tsv", "txt"])
    attributes_file = st.file_uploader("Attributes CSV (user id + attribute columns), optional", type=["csv", "tsv", "txt"])
    # uploads go through session state so that a rerun (and a test) sees the same bytes
    if interactions_file is not None:
        st.session_state[Keys.UPLOAD_INTERACTIONS] = (interactions_file.name, interactions_file.getvalue())
    if attributes_file is not None:
        st.session_state[Keys.UPLOAD_ATTRIBUTES] = (attributes_file.name, attributes_file.getvalue())
left, right = st.columns(2)
if source != DEMO and left.checkbox("Only ratings at or above a threshold count as interactions",
                                    key="model_use_threshold"):
    threshold = left.number_input("Rating threshold", value=4.0, step=0.5, key="model_threshold")
kcore = right.number_input("k-core: minimum interactions per user and item", min_value=1, max_value=100,
                           value=MIN_INTERACTIONS, step=1, key="model_kcore",
                           help="Users and items with fewer interactions are removed, repeatedly until none is left "
                                "(1 = keep everything). The numbers removed are shown below.")

dataset = None
try:
    dataset = cached_dataset(
        source, folder,
        st.session_state.get(Keys.UPLOAD_INTERACTIONS) if source == UPLOAD else None,
        st.session_state.get(Keys.UPLOAD_ATTRIBUTES) if source == UPLOAD else None,
        threshold, int(kcore),
    )
except DataError as error:
    st.error(f"Could not load the data: {error}")

if dataset is None:
    st.stop()

split = cached_split(dataset, dataset.fingerprint)
stats = dataset.statistics()
columns = st.columns(4)
columns[0].metric("Users", f"{stats['users']:,}")
columns[1].metric("Items", f"{stats['items']:,}")
columns[2].metric("Interactions", f"{stats['interactions']:,}")
columns[3].metric("Density", f"{stats['density']:.2%}")
st.caption(f"{dataset.name}. Split in use: {split.describe()}. Attributes: {stats['attributes']}.")
for note in dataset.notes:  # the encoding, the rating threshold and the k-core filter, with the numbers removed
    st.caption(f"Data: {note}.")

# ---------------------------------------------------------------- model
st.subheader("2. Recommender")
train_tab, load_tab = st.tabs(["Train", "Load a saved model"])
with train_tab:
    kind = st.selectbox("Model", list(MODEL_INFO), format_func=lambda k: MODEL_INFO[k].label, key="model_kind")
    st.caption(MODEL_INFO[kind].description)
    left, middle, right = st.columns(3)
    dim = left.selectbox("Embedding size", [16, 32, 64], index=2, key="model_dim")
    max_epochs = middle.slider("Maximum epochs", 1, 300, 200, key="model_epochs",
                               help="Training stops earlier when validation NDCG@20 stops improving.")
    lr = right.select_slider("Learning rate", [5e-4, 1e-3, 2e-3, 5e-3, 1e-2], value=DEFAULT_LR[kind], key="model_lr")
    config = TrainConfig(dim=dim, lr=lr, max_epochs=max_epochs)
    if st.button("Train", type="primary", key="train_button"):
        # a background job, recorded in the history with the trained model's files (so History can reopen it)
        spec = {DEMO: "synthetic", MOVIELENS: f"ml-100k:{folder}"}.get(source)
        label, device = MODEL_INFO[kind].label, compute_device()

        def finish(result, run_ids):
            save_trained(run_store(), run_ids[0], result, dataset, spec=spec, rating_threshold=threshold,
                         kcore=int(kcore), split_mode=split.mode)
            return training_fields(result)

        submit("train", (dataset.fingerprint, kind, config, str(device)),
               lambda progress, cancel: cached_training(split, dataset.fingerprint, kind, config, progress=progress),
               f"Training {label} on {device.type}", finish=finish, context={"dataset": dataset, "split": split},
               record={"kind": "training", "label": f"{label} on {dataset.name}", "model": label, "source": "app",
                       "params": {**training_params(kind, config, spec), "rating_threshold": threshold,
                                  "kcore": int(kcore)},
                       "device": str(device), **dataset_fields(dataset)})
    job_status(use_training_job(), "Training")
    result = st.session_state.get(Keys.LAST_TRAIN_RESULT)
    if result is not None and result.model.kind == kind:
        history = pd.DataFrame(result.history)
        if "valid NDCG@20" in history:
            st.plotly_chart(training_figure(history), key="model_training_chart")
        with st.expander("Save this model"):
            save_folder = st.text_input("Folder to save to", value=f"models/{dataset.name.replace(' ', '-')}-{kind}")
            if st.button("Save", key="save_button"):
                save_model(save_folder, result, dataset, rating_threshold=threshold, kcore=int(kcore),
                           split_mode=split.mode)
                st.success(f"Saved to {save_folder} (weights.safetensors + model.json).")
with load_tab:
    load_folder = st.text_input("Folder of a saved model (weights.safetensors + model.json)", key="load_folder")
    if st.button("Load", key="load_button") and load_folder:
        try:
            set_active(loaded_model(dataset, split, load_folder))
        except DataError as error:
            st.error(f"Could not load the model: {error}")

# ---------------------------------------------------------------- quality
active = active_model()
if active is not None and active.dataset.fingerprint == dataset.fingerprint:
    st.subheader("3. Recommendation quality")
    st.caption(f"{active.origin}" + (f", {active.seconds:.1f} s" if active.seconds else ""))
    st.dataframe(ranking_table(active.test), hide_index=True)
    st.caption(f"{NDCG_EXPLANATION} Full ranking over all items with training and validation items masked; averaged "
               f"over {active.test.n_users:,} test users. The Audit and Unlearning pages use this model.")
    if active.model.kind == "bpr":  # a dot-product model: its tables re-import on the Assess page
        with st.expander("Export this model's tables and interactions (they upload back on the Assess page)"):
            model_exports(active)
