"""AppTest: the Assess page end to end. The sample pair is audited and unlearned, and its download uploads back
to the same numbers; the off-by-one upload is refused until matched by position (then it leaks); uploads can be
removed and replaced; each class of bad input gets its message, never a traceback."""
import io

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from conftest import APP
from core.data import upload_limit_mb
from core.uploads import embeddings_bytes, sample_pair
from ui.state import Keys

N = 200


def open_assess(embeddings=None, attributes=None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    if embeddings is not None:
        at.session_state[Keys.UPLOAD_EMBEDDINGS] = embeddings
    if attributes is not None:
        at.session_state[Keys.UPLOAD_EMBEDDING_ATTRIBUTES] = attributes
    at.run()
    at.switch_page("pages/assess.py")
    at.run()
    assert not at.exception
    return at


def text_of(elements) -> str:
    return " ".join(e.value for e in elements)


def audit_with_logreg(at: AppTest) -> None:
    at.radio(key="assess_attacker_set").set_value("custom")
    at.run()
    at.multiselect(key="assess_attackers").set_value(["logreg"])
    at.button(key="assess_run").click()
    at.run()
    assert not at.exception


def leaking_npy() -> tuple[bytes, bytes]:
    """The issue's case: a .npy without ids whose dimension 0 carries gender, and attributes with ids 1..N."""
    rng = np.random.default_rng(0)
    gender = np.array(["F", "M"])[np.arange(N) % 2]
    table = rng.normal(size=(N, 8)).astype(np.float32)
    table[:, 0] += np.where(gender == "F", 1.2, -1.2)
    buffer = io.BytesIO()
    np.save(buffer, table)
    attributes = pd.DataFrame({"user_id": np.arange(1, N + 1), "gender": gender}).to_csv(index=False).encode()
    return buffer.getvalue(), attributes


@pytest.fixture(scope="module")
def sampled():
    at = open_assess()
    assert "Upload both files" in text_of(at.info)
    assert f"Up to {upload_limit_mb()} MB per file" in text_of(at.caption)  # the one limit, from the config
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["Sample embeddings (.csv)", "Sample attributes (.csv)"]
    at.button(key="assess_use_sample").click()
    at.run()
    assert not at.exception
    at.multiselect(key="assess_attributes").set_value(["gender"])
    at.run()
    audit_with_logreg(at)
    return at


def test_the_sample_pair_is_read_matched_by_id_and_leaks(sampled):
    captions = text_of(sampled.caption)
    assert "sample_embeddings.csv: 1,000 users × 32 dimensions" in captions and "matched by user id" in captions
    assert "binary: it has exactly two values (F, M)" in captions  # type and class counts
    assert sampled.selectbox(key="assess_type_gender").value == "binary"
    verdicts = sampled.dataframe[0].value
    assert verdicts["attribute"].tolist() == ["gender"] and verdicts["verdict"].tolist() == ["leaks"]
    assert any(e.value.startswith("gender leaks") for e in sampled.error)
    assert "Download the report (JSON)" in [b.label for b in sampled.get("download_button")]


def test_unlearning_the_sample_and_its_download_uploads_back_to_the_same_numbers(sampled):
    assert "adv_int" not in sampled.selectbox(key="assess_method").options  # needs a recommender
    sampled.selectbox(key="assess_method").set_value("leace")
    sampled.run()
    sampled.button(key="assess_unlearn").click()
    sampled.run()
    assert not sampled.exception
    comparison = sampled.dataframe[2].value
    assert comparison["method"].tolist()[0] == "Original" and len(comparison) == 2
    after = comparison["AUC gender Logistic regression"].iloc[1]
    assert abs(after - 0.5) < abs(comparison["AUC gender Logistic regression"].iloc[0] - 0.5)
    assert [b.label for b in sampled.get("download_button")][-2:] == [
        "Download the edited embeddings (.csv)", "Download their attributes (.csv)"]
    # what the download button holds (the same function, the same table and ids), uploaded back: same numbers
    edited = sampled.session_state[Keys.ASSESS_EDITED]["result"].table.numpy()
    upload = sampled.session_state[Keys.UPLOAD_EMBEDDINGS]
    ids = pd.read_csv(io.BytesIO(upload[1]))["user_id"].to_numpy()
    again = open_assess(("edited.parquet", embeddings_bytes(edited, ids, "parquet")),
                        sampled.session_state[Keys.UPLOAD_EMBEDDING_ATTRIBUTES])
    again.multiselect(key="assess_attributes").set_value(["gender"])
    again.run()
    audit_with_logreg(again)
    reaudit = again.dataframe[1].value
    assert "matched by user id" in text_of(again.caption)
    assert reaudit["AUC"].iloc[0].startswith(f"{after:.3f}")


def test_the_off_by_one_upload_is_refused_until_matched_by_position_and_then_leaks():
    table, attributes = leaking_npy()
    at = open_assess(("users.npy", table), ("attributes.csv", attributes))
    error = at.error[0].value
    assert error.startswith("The files cannot be audited") and "users.npy has no user ids (200 rows)" in error
    assert "match by position" in error and not at.get("multiselect")  # nothing to audit yet
    at.checkbox(key="assess_match_by_position").check()
    at.run()
    assert not at.exception
    assert "matched by position" in text_of(at.info) and "**matched by position**" in text_of(at.caption)
    audit_with_logreg(at)
    assert at.dataframe[0].value["verdict"].tolist() == ["leaks"]


def test_uploads_can_be_removed_and_replaced():
    embeddings, attributes = sample_pair()
    at = open_assess(("mine.csv", embeddings), ("attrs.csv", attributes))
    assert "In use: **mine.csv**" in text_of(at.caption)
    at.button(key="assess_emb_remove").click()
    at.run()
    assert not at.exception
    assert Keys.UPLOAD_EMBEDDINGS not in at.session_state and "Upload both files" in text_of(at.info)
    assert "In use: **attrs.csv**" in text_of(at.caption)  # the other file stays
    at.session_state[Keys.UPLOAD_EMBEDDINGS] = ("replacement.csv", embeddings)
    at.run()
    assert "replacement.csv: 1,000 users" in text_of(at.caption)


def latin1_attributes() -> bytes:
    names = ["José", "Zoë", "Ana", "Jürgen"]
    rows = [f"{u},{names[u % 4]},{'MF'[u % 2]}" for u in range(1, N + 1)]
    return ("user_id,name,gender\n" + "\n".join(rows)).encode("cp1252")


def table_csv(**columns) -> bytes:
    frame = pd.DataFrame(np.random.default_rng(1).normal(size=(N, 4))).add_prefix("d")
    return frame.assign(**columns).to_csv(index=False).encode()


@pytest.mark.parametrize("embeddings, attributes, message", [
    (("evil.npy", b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, 'shape': (1,), }" + b" " * 60
      + b"\n\x80\x04"), None, "not a valid .npy file"),
    (("evil.npz", None), None, "pickled data"),
    (("cut.parquet", b"PAR1\x00\x00"), None, "not a readable Parquet file"),
    (("ids.csv", table_csv(user_id=np.arange(1000, 1000 + N))), None, "only 0 user ids appear in both files"),
    (("index.csv", table_csv(user_index=np.arange(N))), None, "column 'user_index' holds row numbers"),
    (("dup.csv", table_csv(user_id=np.r_[np.arange(N - 1), 3])), None, "user id 3 appears more than once"),
    (("text.csv", table_csv(user_id=np.arange(1, N + 1), d2=["x"] * N)), None, "'x' is not a number"),
    (("nan.csv", table_csv(user_id=np.arange(1, N + 1), d1=np.r_[np.nan, np.ones(N - 1)])), None,
     "1 rows contain NaN or infinite values"),
    (("cut.csv", table_csv(user_id=np.arange(1, N + 1))[:200]), None, "fields where the first line has 5"),
    (("few.csv", b"\n".join(table_csv(user_id=np.arange(1, N + 1)).split(b"\n")[:11])), None, "too small"),
    (None, ("bad.csv", b"user_id;gender\n1;F;x;y\n"), "is the separator a comma, tab, semicolon or |?"),
    (None, ("attrs.json", b"{}"), "attributes must be .csv or .parquet"),
])
def test_each_class_of_bad_input_gets_its_message(embeddings, attributes, message):
    if embeddings is None:
        embeddings = ("ok.csv", table_csv(user_id=np.arange(1, N + 1)))
    if embeddings[1] is None:
        buffer = io.BytesIO()
        np.savez(buffer, embeddings=np.array([{"x": 1}], dtype=object))
        embeddings = (embeddings[0], buffer.getvalue())
    at = open_assess(embeddings, attributes or ("attributes.csv", latin1_attributes()))
    assert at.error, "expected an error message"
    assert at.error[0].value.startswith("The files cannot be audited") and message in at.error[0].value


def test_a_latin1_attributes_file_is_read_with_a_visible_note():
    at = open_assess(("users.csv", table_csv(user_id=np.arange(1, N + 1))), ("names.csv", latin1_attributes()))
    assert not at.error
    assert "names.csv is not UTF-8" in text_of(at.info)
    assert at.multiselect(key="assess_attributes").options == ["name", "gender"]
    assert "José" in text_of(at.caption)  # the class names, read right


def test_a_model_trained_elsewhere_gives_its_own_ndcg_before_and_after_unlearning():
    """A BPR-MF's user and item tables and its interactions (with their split), uploaded: the page rebuilds the
    dot-product scorer, shows the model's own test NDCG@20, and measures it again after unlearning."""
    from core.data import make_synthetic, split_per_user
    from core.training import TrainConfig, train_model
    from core.uploads import attributes_bytes, interactions_bytes, model_tables_bytes

    dataset = make_synthetic(n_users=300, n_items=400, seed=5)
    split = split_per_user(dataset, seed=0)
    trained = train_model("bpr", split, TrainConfig(dim=16, lr=5e-3, max_epochs=5, seed=0))
    users, items = model_tables_bytes(trained.model, dataset, "npz")
    at = open_assess(("users.npz", users), ("attributes.csv", attributes_bytes(dataset.attributes, dataset.user_ids)))
    at.session_state[Keys.UPLOAD_ITEM_TABLE] = ("items.npz", items)
    at.session_state[Keys.UPLOAD_MODEL_INTERACTIONS] = ("interactions.csv", interactions_bytes(split))
    at.run()
    assert not at.exception and not at.error
    quality = at.dataframe[0].value
    assert quality["NDCG@20"].iloc[0] == pytest.approx(trained.test.metrics["NDCG@20"], abs=1e-6)
    assert "split in use: the file's own split column" in text_of(at.caption)
    at.multiselect(key="assess_attributes").set_value(["gender"])
    at.radio(key="assess_attacker_set").set_value("custom")
    at.run()
    at.multiselect(key="assess_attackers").set_value(["logreg"])
    at.selectbox(key="assess_method").set_value("leace")
    at.run()
    at.button(key="assess_unlearn").click()
    at.run()
    assert not at.exception
    comparison = at.dataframe[-1].value
    assert comparison["NDCG@20"].iloc[0] == pytest.approx(trained.test.metrics["NDCG@20"], abs=1e-6)
    assert 0 < comparison["NDCG@20"].iloc[1] and len(comparison) == 2


def test_an_attribute_with_too_many_classes_is_refused_on_the_page_with_what_to_do():
    n = 1300
    table = np.random.default_rng(2).normal(size=(n, 4)).astype(np.float32)
    attributes = pd.DataFrame({"user_id": np.arange(n), "region": [f"r{i % 65}" for i in range(n)],
                               "gender": np.array(["F", "M"])[np.arange(n) % 2]})
    at = open_assess(("users.npz", embeddings_bytes(table, np.arange(n), "npz")),
                     ("attributes.csv", attributes.to_csv(index=False).encode()))
    assert at.selectbox(key="assess_type_region").value == "categorical"
    assert any("has 65 classes" in e.value and "more than the 50" in e.value for e in at.error)
    assert not at.get("button") or "assess_run" not in [b.key for b in at.button]  # no audit on a refused type
    at.multiselect(key="assess_attributes").set_value(["gender"])
    at.run()
    assert not at.error and "assess_run" in [b.key for b in at.button]
