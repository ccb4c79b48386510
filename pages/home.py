"""Home: what the dashboard is for and the order of the pages."""
import streamlit as st

from ui.state import active_model

st.title("Privacy audit for recommender systems")
st.markdown(
    "Recommenders learn user embeddings that leak attributes users never gave them, such as gender, age or "
    "occupation. This dashboard **measures** that leakage with attribute-inference attacks and **removes** it "
    "with unlearning methods, showing the cost in recommendation quality side by side."
)
st.markdown(
    """
**How to use it**
1. **Model**: load data (the built-in demo, MovieLens-100K, or your own interactions CSV) and train or load a
   recommender (BPR-MF, NeuMF, LightGCN).
2. **Audit**: attack every user representation the model serves with to see how much each attribute leaks
   (a verdict per attribute against a tolerance on |AUC − 0.5|, with intervals and a permutation test), or upload
   embeddings and an attributes table instead.
3. **Unlearning**: remove one or several attributes, aiming at a target |AUC − 0.5|, and compare leakage,
   ranking quality and runtime before and after.

Every run, from these pages or from `python -m core`, is kept: **History & Compare** lists them, puts runs side by
side and exports a report (HTML that opens offline, JSON, CSV). Long runs work in the background with a progress
bar and a Cancel button; you can switch pages or reload meanwhile.

The compute device (a GPU when there is one) and where the history is kept are under **Settings** in the sidebar.
"""
)
active = active_model()
if active is not None:
    st.success(f"Working on: {active.dataset.name}, {active.origin}.")
