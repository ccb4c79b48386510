"""AppTest: the Audit page runs on the demo model and on uploads, and explains bad files without a traceback."""
import io

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from conftest import APP, app_with_demo_model
from pages.common import UPLOAD_TARGET, Keys


@pytest.fixture(scope="module")
def audited():
    at = app_with_demo_model("pages/audit.py")
    at.multiselect(key="audit_attributes").set_value(["gender", "age"])
    at.button(key="audit_run").click()
    at.run()
    assert not at.exception
    return at


def test_audit_page_shows_verdicts_table_and_charts(audited):
    table = audited.dataframe[0].value
    assert set(table["attribute"]) == {"gender", "age"} and set(table["attacker"]) == {"MLP", "XGBoost"}
    assert table["AUC"].str.match(r"^0\.\d{3} \[0\.\d{3}, [01]\.\d{3}\]$").all()  # mean [low, high]
    messages = [m.value for m in audited.error] + [m.value for m in audited.success]
    assert any(m.startswith("gender leaks") for m in messages)  # the demo plants gender in users' tastes
    assert "two-sided" in " ".join(c.value for c in audited.caption)
    assert len(audited.get("plotly_chart")) == 2  # ROC curves and the per-dimension histograms
    assert [b.label for b in audited.get("download_button")] == ["Download the report (JSON)",
                                                                  "Download the report (Markdown)"]


def test_audit_page_umap(audited):
    audited.toggle(key="audit_umap").set_value(True)
    audited.run(timeout=300)
    assert not audited.exception
    assert len(audited.get("plotly_chart")) == 3


def run_upload(embeddings: tuple[str, bytes], attributes: tuple[str, bytes]) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state[Keys.UPLOAD_EMBEDDINGS] = embeddings
    at.session_state[Keys.UPLOAD_EMBEDDING_ATTRIBUTES] = attributes
    at.run()
    at.switch_page("pages/audit.py")
    at.run()
    assert not at.exception
    assert at.radio(key="audit_source").value == UPLOAD_TARGET
    return at


def npy_bytes(array, allow_pickle=False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


ATTRIBUTES = ("attributes.csv", ("user_id,gender\n" + "\n".join(f"{u},{'MF'[u % 3 == 0]}" for u in range(60))).encode())


def test_uploaded_embeddings_are_audited():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(60, 8)).astype(np.float32)
    table[::3, 0] += 3.0  # users 0, 3, 6, … (gender F) are planted on dimension 0
    at = run_upload(("mine.npy", npy_bytes(table)), ATTRIBUTES)
    at.multiselect(key="audit_attackers").set_value(["logreg"])
    at.button(key="audit_run").click()
    at.run()
    assert not at.exception
    assert at.dataframe[0].value["attacker"].tolist() == ["Logistic regression"]
    assert any(e.value.startswith("gender leaks") for e in at.error)


@pytest.mark.parametrize(
    "embeddings, expected",
    [
        (("nan.csv", pd.DataFrame(np.where(np.eye(60, 4) > 0, np.nan, 1.0)).add_prefix("d").to_csv(index=False).encode()),
         "4 rows contain NaN or infinite values"),
        (("evil.npy", npy_bytes(np.array([{"x": 1}], dtype=object), allow_pickle=True)), "pickled data"),
        (("ids.csv", pd.DataFrame(np.ones((60, 4))).add_prefix("d").assign(user_id=np.arange(500, 560)).to_csv(index=False).encode()),
         "only 0 user ids appear in both files"),
    ],
)
def test_bad_uploads_are_explained(embeddings, expected):
    at = run_upload(embeddings, ATTRIBUTES)
    assert at.error and expected in at.error[0].value
    assert at.error[0].value.startswith("The files cannot be audited")
