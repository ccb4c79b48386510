"""AppTest: the History & Compare page lists the kept runs (a page's training run and a command-line audit), compares
them side by side with charts and reports, reopens a kept model on the Audit page, and deletes a run with its
files. The run history is the temporary one tests/conftest.py points PRIVACY_AUDIT_RUNS at."""
import pytest
from streamlit.testing.v1 import AppTest

from conftest import APP, app_with_demo_model
from core.cli import main
from core.runstore import open_store


@pytest.fixture(scope="module")
def trained_and_audited(tmp_path_factory):
    """The Model page trains the demo's BPR-MF (recorded with its weights); the CLI audits that kept model."""
    at = app_with_demo_model("pages/history.py")
    store = open_store()
    training = [r for r in store.records("training") if r.source == "app"][-1]
    folder = store.run_folder(training.run_id)
    assert main(["audit", "--model", str(folder), "--attribute", "gender", "--attacker", "logreg",
                 "--permutations", "20"]) in (0, 1)
    audit = store.records("audit")[-1]
    return at, training, audit


def open_history() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.switch_page("pages/history.py")
    at.run()
    assert not at.exception
    return at


def test_history_lists_and_compares_runs(trained_and_audited):
    _, training, audit = trained_and_audited
    at = open_history()
    table = at.dataframe[0].value
    assert {training.run_id, audit.run_id} <= set(table["run"])
    row = table[table["run"] == audit.run_id].iloc[0]
    assert row["kind"] == "audit" and row["status"] == "finished"
    assert row["verdict"] == audit.verdicts["gender"]["status"]  # a verdict column in the runs table
    v = audit.verdicts["gender"]
    assert row["AUC gender [95% interval]"] == f"{v['auc']:.3f} [{v['auc_low']:.3f}, {v['auc_high']:.3f}]"
    assert row["fingerprint"] == training.fingerprint  # the CLI audit names the same data as the page's training

    at.multiselect(key="history_compare").set_value([training.run_id, audit.run_id])
    at.run()
    compared = at.dataframe[1].value
    assert list(compared["run"]) == [training.run_id, audit.run_id]
    assert compared["NDCG@20"].iloc[1] == pytest.approx(training.metrics["NDCG@20"], abs=1e-6)
    charts = at.get("plotly_chart")
    assert len(charts) == 2  # AUC against NDCG, and runtime
    assert "0.5 means no better than chance" in " ".join(c.value for c in at.caption)
    assert [b.label for b in at.get("download_button")] == ["Report (.html)", "Report (.json)", "Report (.csv)"]


def test_kind_filter_and_search(trained_and_audited):
    _, training, audit = trained_and_audited
    at = open_history()
    at.multiselect(key="history_kinds").set_value(["audit"])
    at.run()
    assert set(at.dataframe[0].value["kind"]) == {"audit"}
    at.multiselect(key="history_kinds").set_value(["audit", "training"])
    at.text_input(key="history_search").set_value(training.run_id[:8])
    at.run()
    # the training run, and the audit of its kept model (whose label names the run's folder)
    assert set(at.dataframe[0].value["run"]) == {training.run_id, audit.run_id}
    at.text_input(key="history_search").set_value("GENDER")
    at.run()
    assert audit.run_id in set(at.dataframe[0].value["run"])
    assert set(at.dataframe[0].value["kind"]) == {"audit"}  # training runs have no attributes


def test_a_kept_model_reopens_on_the_audit_page(trained_and_audited):
    _, training, _ = trained_and_audited
    at = open_history()
    at.selectbox(key="history_run").set_value(training.run_id)
    at.run()
    at.button(key="history_reopen").click()
    at.run()
    assert not at.exception
    assert at.title[0].value == "Audit"
    assert any(f"reopened BPR-MF from run {training.run_id}" in c.value for c in at.caption)


def test_deleting_a_run_removes_it_and_its_files(trained_and_audited):
    _, _, audit = trained_and_audited
    store = open_store()
    folder = store.run_folder(audit.run_id)
    assert (folder / "attacks.parquet").exists()
    at = open_history()
    at.selectbox(key="history_run").set_value(audit.run_id)
    at.run()
    assert at.button(key="history_delete").disabled  # only after saying so
    at.checkbox(key="history_delete_confirm").check()
    at.run()
    at.button(key="history_delete").click()
    at.run()
    assert not at.exception
    assert audit.run_id not in set(at.dataframe[0].value["run"])
    assert not folder.exists()
    with pytest.raises(KeyError):
        store.get(audit.run_id)
