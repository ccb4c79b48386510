"""AppTest: the Home and Model pages open, train on the demo, show the metrics, and explain bad uploads."""
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from core.device import describe, get_device
from ui.data import UPLOAD
from ui.state import Keys

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def open_page(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    assert not at.exception
    if page:
        at.switch_page(page)
        at.run()
        assert not at.exception
    return at


def test_home_says_what_the_app_is_for():
    at = open_page()
    assert at.title[0].value == "Privacy audit for recommender systems"
    assert "leak attributes" in at.markdown[0].value
    # the compute device is chosen once for the process and named in the sidebar on every page: the GPU where there
    # is one (on an H200 this test once hard-coded "cpu" and failed), else the CPU with a word on why
    expected = f"Compute device: {describe(get_device())}"
    assert at.sidebar.caption[0].value.startswith(expected)
    assert at.sidebar.caption[0].value.endswith("(no GPU found)") == (not torch.cuda.is_available())


def test_model_page_trains_on_the_demo_and_shows_metrics():
    at = open_page("pages/model.py")
    assert [m.label for m in at.metric][:3] == ["Users", "Items", "Interactions"]
    at.slider(key="model_epochs").set_value(3)
    at.button(key="train_button").click()
    at.run()
    assert not at.exception
    table = at.dataframe[-1].value
    assert list(table["protocol"]) == ["full ranking (test)"]
    for column in ("NDCG@5", "HR@5", "NDCG@10", "HR@10", "NDCG@20", "HR@20"):
        assert 0.0 < table[column].iloc[0] <= 1.0
    assert table["HR@20"].iloc[0] >= table["HR@5"].iloc[0]
    # a rerun reuses the cached model instead of training again
    at.button(key="train_button").click()
    at.run()
    assert at.dataframe[-1].value.equals(table)


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"user item\n1 2\n", "is the separator a comma, tab, semicolon or |?"),
        (b"user;item\n1;2\n", "no user and item has 5 or more interactions"),
        (b"user\titem\nalice\t3\n", "line 2: user 'alice' is not an integer id"),
        (b"", "the file is empty"),
        (b"uid,movie\n1,2\n", "missing the item column"),
    ],
)
def test_bad_upload_shows_a_message_not_a_traceback(content, expected):
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state[Keys.UPLOAD_INTERACTIONS] = ("mine.csv", content)
    at.run()
    at.switch_page("pages/model.py")
    at.run()
    at.radio(key="model_data_source").set_value(UPLOAD)
    at.run()
    assert not at.exception
    assert at.error, "expected an error message"
    assert "mine" in at.error[0].value
    assert expected in at.error[0].value


def test_missing_movielens_folder_is_explained(tmp_path):
    at = open_page("pages/model.py")
    at.radio(key="model_data_source").set_value("MovieLens-100K folder")
    at.run()
    at.text_input[0].set_value(str(tmp_path))
    at.run()
    assert not at.exception
    assert "expected a MovieLens-100K folder" in at.error[0].value


def test_kcore_threshold_and_a_split_column_are_shown_with_the_numbers_removed():
    rng = __import__("numpy").random.default_rng(0)
    rows = [f"{u},{i},{'test' if rng.random() < 0.2 else 'train'}" for u in range(1, 41)
            for i in rng.choice(range(1, 31), int(rng.integers(4, 14)), replace=False)]
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state[Keys.UPLOAD_INTERACTIONS] = ("mine.csv", ("user,item,split\n" + "\n".join(rows)).encode())
    at.run()
    at.switch_page("pages/model.py")
    at.run()
    at.radio(key="model_data_source").set_value(UPLOAD)
    at.run()
    assert not at.exception and not at.error
    captions = " ".join(c.value for c in at.caption)
    assert "Split in use: the file's own split column" in captions and "mine.csv has its own split column" in captions
    assert "k-core filter (k = 5" in captions
    users_at_5 = int(at.metric[0].value.replace(",", ""))
    at.number_input(key="model_kcore").set_value(7)
    at.run()
    assert not at.exception and not at.error
    captions = " ".join(c.value for c in at.caption)
    assert "k-core filter (k = 7" in captions and int(at.metric[0].value.replace(",", "")) < users_at_5
