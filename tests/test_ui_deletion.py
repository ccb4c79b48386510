"""AppTest: the Deletion page runs Retrain and LightUL-style on the demo model (a background job, run in place under
tests), shows the side-by-side table with verdicts and both charts, records the run in the history (listed on the
History page with its table), makes the updated model the active one for the Audit page, and refuses unknown ids with
a message (no traceback)."""
import pytest

from conftest import app_with_demo_model
from ui.state import Keys

VERDICTS = {"reference", "matches Retrain", "under-forgets", "over-forgets"}


@pytest.fixture(scope="module")
def deleted():
    at = app_with_demo_model("pages/deletion.py")  # BPR-MF trained 3 epochs on the demo through the Model page
    assert at.radio(key="delete_request_kind").value == "Random interactions"
    assert at.multiselect(key="delete_methods").value == ["retrain", "lightul"]
    at.number_input(key="delete_lightul_steps").set_value(30)
    at.button(key="delete_run").click()
    at.run()
    assert not at.exception
    return at


def test_side_by_side_table_with_verdicts(deleted):
    table = deleted.dataframe[0].value
    assert list(table["method"]) == ["Original", "Retrain", "LightUL-style"]
    assert list(table.columns[:2]) == ["method", "verdict"]
    assert set(table["verdict"]) <= VERDICTS and table["verdict"].iloc[1] == "reference"
    assert {"seconds", "speed-up vs Retrain", "NDCG@20", "NDCG@50", "HR@20", "Recall@20", "forgotten-vs-retained AUC",
            "forget HR@20", "median forgotten rank", "MIA AUC", "Jaccard@20 vs Retrain"} <= set(table.columns)
    # the page shows the core comparison's numbers, not its own
    report = deleted.session_state[Keys.DELETION_RUN]["report"]
    assert table["NDCG@20"].iloc[2] == pytest.approx(report.rows[2].accuracy["NDCG@20"], abs=1e-4)
    assert table["forgotten-vs-retained AUC"].iloc[1] > table["forgotten-vs-retained AUC"].iloc[0]


def test_completeness_and_rank_charts(deleted):
    charts = deleted.get("plotly_chart")
    assert len(charts) == 2
    titles = " ".join(chart.proto.spec for chart in charts)
    assert "Completeness of each method beside Retrain" in titles and "Where the forgotten items now rank" in titles


def test_the_page_run_is_kept_in_the_history(deleted):
    """The page's run (a job, run in place under tests) is recorded once, finished, with the table and verdicts the
    page shows, the request in counts only; the History page lists it and shows its table."""
    from streamlit.testing.v1 import AppTest

    from conftest import APP
    from core.runstore import open_store

    report = deleted.session_state[Keys.DELETION_RUN]["report"]
    request = deleted.session_state[Keys.DELETION_RUN]["request"]
    runs = [r for r in open_store().records("deletion") if r.source == "app"]
    record = runs[-1]
    # a second press with the same settings, then a page switch, find the finished job: no second run, same table
    deleted.button(key="delete_run").click()
    deleted.run()
    deleted.switch_page("pages/model.py")
    deleted.run()
    deleted.switch_page("pages/deletion.py")
    deleted.run()
    assert not deleted.exception and deleted.session_state[Keys.DELETION_RUN]["report"] is report
    assert len([r for r in open_store().records("deletion") if r.source == "app"]) == len(runs)
    assert list(deleted.dataframe[0].value["method"]) == ["Original", "Retrain", "LightUL-style"]
    assert (record.status, record.dataset) == ("finished", deleted.session_state[Keys.ACTIVE].dataset.name)
    assert record.params["methods"] == ["retrain", "lightul"] and record.params["method params"]["lightul"]["steps"] == 30
    assert record.params["request"]["interactions"] == request.n_pairs
    table = record.results["tables"]["comparison"]
    assert [row["method"] for row in table] == ["Original", "Retrain", "LightUL-style"]
    assert table[2]["NDCG@20"] == pytest.approx(report.rows[2].accuracy["NDCG@20"])
    assert record.verdicts["LightUL-style"]["status"] == report.row("lightul").verdict

    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/history.py")
    at.run()
    listed = at.dataframe[0].value
    row = listed[listed["run"] == record.run_id].iloc[0]
    assert (row["kind"], row["status"], row["verdict"]) == ("deletion", "finished", report.row("lightul").verdict)
    at.selectbox(key="history_run").set_value(record.run_id)
    at.run()
    assert not at.exception
    shown = at.dataframe[-1].value  # the run's own comparison table, under its facts
    assert list(shown["verdict"]) == [r.verdict for r in report.rows]
    assert "LightUL-style" in " ".join(m.value for m in at.markdown)


def test_updated_model_becomes_the_active_model(deleted):
    deleted.selectbox(key="delete_keep").set_value("lightul")
    deleted.run()
    deleted.button(key="delete_activate").click()
    deleted.run()
    assert not deleted.exception
    assert "LightUL-style after forgetting" in deleted.session_state[Keys.ACTIVE].origin


def test_unknown_user_ids_get_a_clear_message():
    at = app_with_demo_model("pages/deletion.py")
    at.radio(key="delete_request_kind").set_value("Pick users")
    at.run()
    at.text_input(key="delete_user_ids").set_value("1, 999999")
    at.run()
    assert not at.exception
    messages = " ".join(e.value for e in at.error)
    assert "999999" in messages and "not in the model's dataset" in messages
    assert not at.dataframe

