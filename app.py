"""Entry point: `streamlit run app.py`. Sets the page config, session defaults and the navigation."""
import sys
from pathlib import Path

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # so pages can import core and ui however the app is started
    sys.path.insert(0, str(ROOT))

from ui.history import use_training_job  # noqa: E402
from ui.widgets import device_caption, require_sign_in, settings_panel  # noqa: E402  (after the path is set)

if PagesManager.uses_pages_directory:
    # A fresh server runs its first script through Streamlit's old pages/-folder navigation (raw file names such as
    # "app" in the sidebar) until st.navigation has been called once; switch to st.navigation now and start again.
    PagesManager.uses_pages_directory = False
    st.rerun()

st.set_page_config(page_title="Recommender privacy audit", page_icon=":material/shield_person:", layout="wide")
require_sign_in()  # only when secrets.toml configures [auth]; served on 127.0.0.1 otherwise

navigation = st.navigation(
    {
        "Overview": [st.Page("pages/home.py", title="Home", icon=":material/home:", default=True)],
        "Workflow": [
            st.Page("pages/model.py", title="Model", icon=":material/model_training:"),
            st.Page("pages/audit.py", title="Audit", icon=":material/policy:"),
            st.Page("pages/assess.py", title="Assess", icon=":material/upload_file:"),
            st.Page("pages/unlearning.py", title="Unlearning", icon=":material/auto_delete:"),
            st.Page("pages/deletion.py", title="Deletion", icon=":material/delete_sweep:"),
        ],
        "Records": [st.Page("pages/history.py", title="History & Compare", icon=":material/history:")],
    }
)
st.sidebar.caption(device_caption())  # chosen once per process, used by every page
settings_panel()  # the device in use and where the run history is kept
use_training_job()  # this tab's finished training job (found again after a reload) is the model every page uses
navigation.run()
