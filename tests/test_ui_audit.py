"""AppTest: the Audit page runs on the demo model and on uploads, gives a verdict per attribute against the
tolerance, lets the attribute types be overridden, and explains bad files without a traceback."""
import io

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from conftest import APP, app_with_demo_model
from ui.state import Keys
from ui.targets import UPLOAD_TARGET

STATUSES = {"leaks", "inconclusive", "no leak"}


@pytest.fixture(scope="module")
def audited():
    at = app_with_demo_model("pages/audit.py")
    at.multiselect(key="audit_attributes").set_value(["gender", "age"])
    at.run()
    at.button(key="audit_run").click()
    at.run()
    assert not at.exception
    return at


def captions(at) -> str:
    return " ".join(c.value for c in at.caption)


def test_audit_defaults_and_inferred_types(audited):
    assert audited.radio(key="audit_attacker_set").value == "default"
    assert "MLP, XGBoost, Logistic regression" in captions(audited)
    assert audited.number_input(key="audit_tolerance").value == pytest.approx(0.05)
    assert audited.selectbox(key="audit_type_gender").value == "binary"
    assert audited.selectbox(key="audit_type_age").value == "categorical"
    text = captions(audited)
    assert "binary: it has exactly two values (F, M)" in text  # the inference's reason, from labels.notes
    assert "Representations audited: user (every one" in text  # BPR-MF serves one representation


def test_audit_page_shows_verdicts_table_and_charts(audited):
    verdicts, attacks = audited.dataframe[0].value, audited.dataframe[1].value
    assert list(verdicts["attribute"]) == ["gender", "age"]
    assert list(verdicts["type"]) == ["binary", "categorical"]
    assert set(verdicts["verdict"]) <= STATUSES and set(verdicts["representation"]) == {"user"}
    assert (verdicts["tolerance"] == 0.05).all()
    gender = verdicts.set_index("attribute").loc["gender"]
    assert gender["verdict"] == "leaks" and gender["|AUC − 0.5|"] > 0.1  # the demo plants gender in users' tastes
    assert set(attacks["attribute"]) == {"gender", "age"}
    assert set(attacks["attacker"]) == {"MLP", "XGBoost", "Logistic regression"}  # DEFAULT_ATTACKERS
    assert attacks["AUC"].str.match(r"^0\.\d{3} \[0\.\d{3}, [01]\.\d{3}\]$").all()  # mean [low, high]
    assert set(attacks["verdict"]) <= STATUSES
    assert any(m.value.startswith("gender leaks") for m in audited.error)
    text = captions(audited)
    assert "0.5 = no better than chance; far below 0.5 is leakage too, mirrored" in text and "two-sided" in text
    assert len(audited.get("plotly_chart")) == 2  # ROC curves and the per-dimension histograms
    assert [b.label for b in audited.get("download_button")] == ["Download the report (HTML, opens offline)",
                                                                  "Download the report (JSON)",
                                                                  "Download the attack tables (Markdown)"]
    # the audit is in the run history with the verdicts shown (what the reports are built from)
    from core.runstore import open_store

    # the page's latest audit of these two attributes (a module run again beside others, as pytest-xdist does, finds
    # its audit cached and another module's audit recorded after it)
    run = [r for r in open_store().records("audit") if r.attributes == ("gender", "age")][-1]
    assert (run.status, run.source) == ("finished", "app")
    assert {a: v["status"] for a, v in run.verdicts.items()} == dict(zip(verdicts["attribute"], verdicts["verdict"]))


def test_attribute_type_can_be_overridden(audited):
    audited.selectbox(key="audit_type_age").set_value("ordinal")
    audited.run()
    assert not audited.exception
    assert "ordinal: set by request" in captions(audited)
    # the shown audit was run with the inferred type: say so instead of mixing settings
    assert any(i.value.startswith("The settings changed since this audit ran") for i in audited.info)
    audited.selectbox(key="audit_type_age").set_value("binary")
    audited.run()
    assert not audited.exception
    assert any("was set to binary but has 4 values" in e.value for e in audited.error)
    audited.selectbox(key="audit_type_age").set_value("categorical")
    audited.run()
    assert not audited.exception and not audited.info
    assert len(audited.dataframe) == 2


def test_audit_page_umap(audited):
    audited.toggle(key="audit_umap").set_value(True)
    audited.run(timeout=300)
    assert not audited.exception
    assert len(audited.get("plotly_chart")) == 3


def run_upload(embeddings: tuple[str, bytes], attributes: tuple[str, bytes]) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state[Keys.UPLOAD_EMBEDDINGS] = embeddings
    at.session_state[Keys.UPLOAD_EMBEDDING_ATTRIBUTES] = attributes
    at.session_state["audit_match_by_position"] = True  # the .npy tables below have no ids: row i is user i's row
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


def test_uploaded_embeddings_are_audited_against_the_tolerance():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(60, 8)).astype(np.float32)
    table[::3, 0] += 3.0  # users 0, 3, 6, … (gender F) are planted on dimension 0
    at = run_upload(("mine.npy", npy_bytes(table)), ATTRIBUTES)
    at.radio(key="audit_attacker_set").set_value("custom")
    at.run()
    assert at.multiselect(key="audit_attackers").value == ["mlp", "xgboost", "logreg"]
    at.multiselect(key="audit_attackers").set_value(["logreg"])
    at.button(key="audit_run").click()
    at.run()
    assert not at.exception
    assert at.dataframe[1].value["attacker"].tolist() == ["Logistic regression"]
    assert at.dataframe[0].value["verdict"].tolist() == ["leaks"]
    assert any(e.value.startswith("gender leaks") for e in at.error)
    # the same gap within a looser tolerance is no leak
    at.number_input(key="audit_tolerance").set_value(0.5)
    at.button(key="audit_run").click()
    at.run()
    assert not at.exception
    verdicts = at.dataframe[0].value
    assert verdicts["verdict"].tolist() == ["no leak"] and verdicts["tolerance"].tolist() == [0.5]
    assert any(s.value.startswith("No leak of gender") for s in at.success) and not at.error


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


@pytest.mark.parametrize("kind, representations", [("lightgcn", ["layer0", "propagated"]), ("neumf", ["gmf+mlp"])])
def test_every_served_representation_is_audited(kind, representations):
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page("pages/model.py")
    at.run()
    at.selectbox(key="model_kind").set_value(kind)
    at.slider(key="model_epochs").set_value(2)
    at.button(key="train_button").click()
    at.run()
    at.switch_page("pages/audit.py")
    at.run()
    assert f"Representations audited: {', '.join(representations)} (every one" in captions(at)
    at.multiselect(key="audit_attributes").set_value(["gender"])
    at.radio(key="audit_attacker_set").set_value("custom")
    at.run()
    at.multiselect(key="audit_attackers").set_value(["logreg"])
    at.button(key="audit_run").click()
    at.run()
    assert not at.exception
    verdicts, attacks = at.dataframe[0].value, at.dataframe[1].value
    assert attacks["representation"].tolist() == representations
    assert verdicts["representation"].iloc[0] in representations  # the worst one headlines
    assert at.selectbox(key="audit_dist_representation").options == representations
    assert len(at.get("plotly_chart")) == len(representations) + 1  # a ROC chart per representation, histograms
