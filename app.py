"""Entry point: `streamlit run app.py`. Sets the page config, session defaults and the navigation."""
import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # so pages can import core and ui however the app is started
    sys.path.insert(0, str(ROOT))

from ui.widgets import device_caption  # noqa: E402  (after the path is set)

st.set_page_config(page_title="Recommender privacy audit", page_icon=":material/shield_person:", layout="wide")

navigation = st.navigation(
    {
        "Overview": [st.Page("pages/home.py", title="Home", icon=":material/home:", default=True)],
        "Workflow": [
            st.Page("pages/model.py", title="Model", icon=":material/model_training:"),
            st.Page("pages/audit.py", title="Audit", icon=":material/policy:"),
            st.Page("pages/assess.py", title="Assess", icon=":material/upload_file:"),
            st.Page("pages/unlearning.py", title="Unlearning", icon=":material/auto_delete:"),
        ],
    }
)
st.sidebar.caption(device_caption())  # chosen once per process, used by every page
navigation.run()
