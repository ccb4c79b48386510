"""core.uploads: rows matched by id or refused (never silently shifted), every export re-imports to the same
numbers, one size limit from .streamlit/config.toml, encodings noted; core.data: a file's own split column and
the k-core threshold."""
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from core.audit import CrossValidation, run_audit
from core.data import (
    STREAMLIT_CONFIG, DataError, encode_attribute, load_interactions_csv, split_per_user, upload_limit_mb,
)
from core.uploads import (
    EMBEDDING_FORMATS, embeddings_bytes, load_attribute_file, load_embeddings,
    prepare_upload, read_audit_report, sample_pair, save_embeddings,
)

ROOT = Path(__file__).resolve().parents[1]
N = 300


def leaking_table(n: int = N, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A table whose dimension 0 carries gender (alternating M/F by row) strongly, and the gender of each row."""
    rng = np.random.default_rng(seed)
    gender = np.array(["F", "M"])[np.arange(n) % 2]
    table = rng.normal(size=(n, 8)).astype(np.float32)
    table[:, 0] += np.where(gender == "F", 1.2, -1.2)
    return table, gender


def attributes_csv(ids, gender) -> bytes:
    return pd.DataFrame({"user_id": ids, "gender": gender}).to_csv(index=False).encode()


def npy(table) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, table, allow_pickle=False)
    return buffer.getvalue()


def gender_auc(upload) -> float:
    labels = {"gender": encode_attribute(upload.attributes["gender"], "gender")}
    result = run_audit(torch.as_tensor(upload.table), labels, attackers=("logreg",), protocol=CrossValidation(),
                       n_permutations=0, seed=0, device="cpu")
    return result.auc("gender", "logreg")


# ------------------------------------------------------------------------------------------------ alignment


def test_the_off_by_one_case_is_refused_and_explained():
    """The issue's case: a .npy without ids, attributes whose ids start at 1. Matching row i to user i shifts every
    label by one and hides the leak; the loader must refuse it and say how to fix it."""
    table, gender = leaking_table()
    attributes = attributes_csv(np.arange(1, N + 1), gender)
    with pytest.raises(DataError) as refused:
        prepare_upload(npy(table), attributes, "users.npy", "attributes.csv")
    message = str(refused.value)
    assert "users.npy has no user ids (300 rows)" in message and "ids 1..300" in message
    assert "user_id column" in message and "--match-by-position" in message
    # asked explicitly, row i gets row i's attributes, and the leak is found
    upload = prepare_upload(npy(table), attributes, "users.npy", "attributes.csv", match_by_position=True)
    assert upload.matched_by == "position" and upload.n_matched == N
    assert list(upload.user_ids[:3]) == [1, 2, 3] and "matched by position" in upload.notes[0]
    assert abs(gender_auc(upload) - 0.5) > 0.3


def test_position_matching_needs_equal_row_counts():
    table, gender = leaking_table()
    with pytest.raises(DataError, match="cannot match by position: e.npy has 300 rows but a.csv has 299"):
        prepare_upload(npy(table), attributes_csv(np.arange(1, N), gender[:-1]), "e.npy", "a.csv",
                       match_by_position=True)


def test_files_without_ids_on_both_sides_are_matched_by_position_and_say_so():
    table, gender = leaking_table()
    attributes = pd.DataFrame({"gender": gender}).to_csv(index=False).encode()
    upload = prepare_upload(npy(table), attributes, "e.npy", "a.csv")
    assert upload.matched_by == "position" and "neither file has user ids" in upload.notes[0]
    assert upload.export_ids is None and abs(gender_auc(upload) - 0.5) > 0.3


@pytest.mark.parametrize("fmt", EMBEDDING_FORMATS[1:])  # every format that carries ids (.npy cannot)
def test_shuffled_files_with_ids_are_joined_on_ids(fmt):
    table, gender = leaking_table()
    ids = np.arange(1001, 1001 + N)
    order = np.random.default_rng(3).permutation(N)
    attribute_order = np.random.default_rng(4).permutation(N)
    data = embeddings_bytes(table[order], ids[order], fmt)
    upload = prepare_upload(data, attributes_csv(ids[attribute_order], gender[attribute_order]), f"e.{fmt}", "a.csv")
    assert upload.matched_by == "id" and upload.n_matched == N and not upload.warnings
    # every row kept its own user's gender, whatever the order of either file
    assert np.array_equal(upload.user_ids, ids[order])
    assert list(upload.attributes["gender"]) == list(gender[order])
    assert abs(gender_auc(upload) - 0.5) > 0.3


def test_unmatched_ids_are_counted_and_listed_and_shifted_ids_flagged():
    table, gender = leaking_table()
    ids = np.arange(N)
    frame = pd.DataFrame(table).add_prefix("d").assign(user_id=ids)
    upload = prepare_upload(frame.to_csv(index=False).encode(), attributes_csv(ids + 1, gender), "e.csv", "a.csv")
    assert upload.n_matched == N - 1
    assert upload.unmatched_embeddings.tolist() == [0] and upload.unmatched_attributes.tolist() == [N]
    text = " ".join(upload.warnings)
    assert "1 users of e.csv have no row in a.csv (ids 0)" in text and "1 users of a.csv are not in e.csv (ids 300)" in text
    assert upload.attributes["gender"].isna().sum() == 1  # the unmatched user is left out of the attacks
    # even ids against odd ones: nothing matches, and the refusal points at the likely slip
    frame = frame.assign(user_id=2 * ids)
    with pytest.raises(DataError, match=r"only 0 user ids appear in both files.*look shifted by one"):
        prepare_upload(frame.to_csv(index=False).encode(), attributes_csv(2 * ids + 1, gender), "e.csv", "a.csv")


def test_row_number_columns_are_refused_not_read_as_dimensions():
    """The Unlearning page's old download wrote a `user_index` column: it holds positions, not ids."""
    table, _ = leaking_table()
    frame = pd.DataFrame(table).add_prefix("dim_")
    frame.insert(0, "user_index", np.arange(N))
    with pytest.raises(DataError, match="column 'user_index' holds row numbers, not user ids"):
        load_embeddings(frame.to_csv(index=False).encode(), "old.csv")
    with pytest.raises(DataError, match="'Unnamed: 0' holds row numbers"):
        load_embeddings(pd.DataFrame(table).add_prefix("d").to_csv().encode(), "indexed.csv")


def test_ids_arrays_are_validated():
    table, _ = leaking_table()
    buffer = io.BytesIO()
    np.savez(buffer, embeddings=table, user_ids=np.arange(N - 1))
    with pytest.raises(DataError, match=r"ids array 'user_ids' has shape \(299,\); expected one id per row"):
        load_embeddings(buffer.getvalue(), "e.npz")
    buffer = io.BytesIO()
    np.savez(buffer, embeddings=table, user_ids=np.r_[np.arange(N - 1), 5])
    with pytest.raises(DataError, match=r"user_ids\[299\]: user id 5 appears more than once"):
        load_embeddings(buffer.getvalue(), "e.npz")
    buffer = io.BytesIO()
    np.savez(buffer, a=table, b=table)
    with pytest.raises(DataError, match="expected one 2-D array"):
        load_embeddings(buffer.getvalue(), "e.npz")
    buffer = io.BytesIO()
    np.savez(buffer, embeddings=np.array([{"x": 1}], dtype=object))
    with pytest.raises(DataError, match="pickled data"):
        load_embeddings(buffer.getvalue(), "evil.npz")
    with pytest.raises(DataError, match="not a valid .npz"):
        load_embeddings(b"PK\x03\x04 truncated", "cut.npz")


# ------------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("fmt", EMBEDDING_FORMATS)
def test_every_embeddings_export_reimports_to_the_same_audit(fmt, tmp_path):
    table, gender = leaking_table()
    ids = np.arange(1, N + 1)
    attributes = attributes_csv(ids, gender)
    original = prepare_upload(embeddings_bytes(table, ids, "csv"), attributes, "e.csv", "a.csv")
    path = save_embeddings(tmp_path / f"edited.{fmt}", original.table, original.export_ids)
    again = prepare_upload(path, attributes, match_by_position=fmt == "npy")  # .npy holds no ids
    assert np.array_equal(again.table, original.table) and np.array_equal(again.user_ids, original.user_ids)
    assert gender_auc(again) == gender_auc(original)


def test_an_audit_report_reads_back_to_the_same_table():
    table, gender = leaking_table()
    upload = prepare_upload(embeddings_bytes(table, np.arange(N), "npz"), attributes_csv(np.arange(N), gender),
                            "e.npz", "a.csv")
    labels = {"gender": encode_attribute(upload.attributes["gender"], "gender")}
    result = run_audit(torch.as_tensor(upload.table), labels, attackers=("logreg",), protocol=CrossValidation(),
                       n_permutations=20, seed=0, device="cpu")
    again = read_audit_report(("[" + result.to_json() + "]").encode(), "audit.json")
    expected = result.to_frame().drop(columns=["seconds"])
    expected["attacker"] = ["logreg"]  # the report keeps the attackers' registry names
    pd.testing.assert_frame_equal(again, expected[list(again.columns)], check_exact=True)
    with pytest.raises(DataError, match="not an audit report written by this tool"):
        read_audit_report(b'[{"scores": []}]', "other.json")


def test_sample_pair_loads_and_leaks():
    embeddings, attributes = sample_pair()
    upload = prepare_upload(embeddings, attributes, "sample_embeddings.csv", "sample_attributes.csv")
    assert upload.matched_by == "id" and upload.n_matched == upload.table.shape[0] >= 900
    assert not np.array_equal(upload.user_ids, np.sort(upload.user_ids))  # shuffled: only ids can align it
    assert abs(gender_auc(upload) - 0.5) > 0.1


def test_cli_audit_refuses_the_ambiguous_case_and_its_outputs_reimport(tmp_path):
    """Exit 2 for the off-by-one case; with --match-by-position the leak is found (exit 1); the JSON report and
    the unlearned table it writes load back with the same numbers."""
    table, gender = leaking_table()
    np.save(tmp_path / "users.npy", table)
    (tmp_path / "attributes.csv").write_bytes(attributes_csv(np.arange(1, N + 1), gender))
    common = ["--embeddings", str(tmp_path / "users.npy"), "--attributes", str(tmp_path / "attributes.csv"),
              "--attacker", "logreg", "--permutations", "0", "--device", "cpu"]

    def cli(*arguments):
        return subprocess.run([sys.executable, "-m", "core", *arguments], cwd=ROOT, capture_output=True, text=True,
                              timeout=300)

    refused = cli("audit", *common, "--max-auc", "0.6")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "has no user ids" in refused.stderr and "gate passed" not in refused.stdout
    leaks = cli("audit", *common, "--match-by-position", "--report", str(tmp_path / "report.json"))
    assert leaks.returncode == 1 and "GATE FAILED: gender leaks" in leaks.stdout
    assert "matched by position" in leaks.stderr
    report = read_audit_report(tmp_path / "report.json")
    upload = prepare_upload(tmp_path / "users.npy", tmp_path / "attributes.csv", match_by_position=True)
    assert report["AUC"].tolist() == [gender_auc(upload)] and report["attribute verdict"].tolist() == ["leaks"]
    out = tmp_path / "clean.csv"
    unlearned = cli("unlearn", "--embeddings", str(tmp_path / "users.npy"), "--attributes",
                    str(tmp_path / "attributes.csv"), "--match-by-position", "--method", "leace", "--out", str(out),
                    "--permutations", "0", "--device", "cpu")
    assert unlearned.returncode in (0, 1), unlearned.stderr
    edited = prepare_upload(out, tmp_path / "attributes.csv")  # the CSV carries the attributes' ids: joined on ids
    assert edited.matched_by == "id" and list(edited.user_ids[:3]) == [1, 2, 3]
    assert abs(gender_auc(edited) - 0.5) < abs(gender_auc(upload) - 0.5)


# ------------------------------------------------------------------------------------------------ limits, encodings


def test_one_size_limit_from_the_streamlit_config(tmp_path, monkeypatch):
    import tomllib

    configured = tomllib.loads(STREAMLIT_CONFIG.read_text())["server"]["maxUploadSize"]
    assert upload_limit_mb() == configured
    small = tmp_path / "config.toml"
    small.write_text("[server]\nmaxUploadSize = 1\n")
    monkeypatch.setattr("core.data.STREAMLIT_CONFIG", small)
    big = embeddings_bytes(np.zeros((20_000, 16), np.float32), None, "npy")  # 1.2 MB
    with pytest.raises(DataError, match=r"over the 1 MB upload limit .*use the command line"):
        load_embeddings(big, "big.npy")
    path = tmp_path / "big.npy"
    path.write_bytes(big)
    assert load_embeddings(path)[0].shape == (20_000, 16)  # a file named on the command line is not limited


def test_latin1_attributes_are_read_with_a_note_and_utf8_silently():
    names = ["José", "Zoë", "Łukasz"[1:], "Ana"] * 5
    rows = "user_id,name,gender\n" + "\n".join(f"{i},{n},{'MF'[i % 2]}" for i, n in enumerate(names))
    latin = load_attribute_file(rows.encode("cp1252"), "latin.csv")
    assert latin.frame["name"].iloc[0] == "José" and latin.frame["name"].iloc[1] == "Zoë"
    assert "latin.csv is not UTF-8" in latin.notes[0] and "Windows-1252" in latin.notes[0]
    for data in (rows.encode("utf-8"), b"\xef\xbb\xbf" + rows.encode("utf-8")):
        utf8 = load_attribute_file(data, "utf8.csv")
        assert utf8.notes == () and utf8.frame["name"].iloc[0] == "José"
        assert list(utf8.frame.columns) == ["name", "gender"]  # the BOM is not glued to the id column's name
    table, _ = leaking_table(20)
    upload = prepare_upload(embeddings_bytes(table, np.arange(20), "csv"), rows.encode("latin-1"), "e.csv", "a.csv")
    assert any("a.csv is not UTF-8" in note for note in upload.notes)


# ------------------------------------------------------------------------------------------------ data settings


def split_file(n_users=40, n_items=30, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    rows = [(u, i, "test" if rng.random() < 0.25 else "train") for u in range(1, n_users + 1)
            for i in rng.choice(np.arange(1, n_items + 1), rng.integers(6, 16), replace=False)]
    rows += [(1, rows[0][1], "train")] if rows[0][2] == "test" else [(1, rows[0][1], "test")]  # a pair listed twice
    return pd.DataFrame(rows, columns=["user", "item", "split"]).to_csv(index=False).encode()


def test_a_split_column_is_honoured_and_no_test_pair_is_trained_on():
    data = split_file()
    frame = pd.read_csv(io.BytesIO(data))
    dataset = load_interactions_csv(data, k=1, file_label="split.csv")
    split = split_per_user(dataset, seed=0)
    assert split.mode == "file" and "own split column" in split.describe()
    raw = lambda pairs: {(dataset.user_ids[u], dataset.item_ids[i]) for u, i in pairs}  # noqa: E731
    train, valid, test = raw(split.train), raw(split.valid), raw(split.test)
    file_test = set(map(tuple, frame.loc[frame["split"] == "test", ["user", "item"]].to_numpy()))
    assert test == file_test  # every test pair of the file, the one listed twice included
    assert not (train & test) and not (valid & test) and not (train & valid)
    assert len(valid) > 0 and valid <= set(map(tuple, frame.loc[frame["split"] == "train", ["user", "item"]].to_numpy()))
    assert split_per_user(dataset, seed=0, mode="random").mode == "random"
    assert any("own split column" in note for note in dataset.notes)


def test_bad_split_labels_are_named():
    data = b"user,item,split\n1,2,train\n1,3,holdout\n"
    with pytest.raises(DataError, match=r"s.csv line 3: split 'holdout' is not a split name"):
        load_interactions_csv(data, k=1, file_label="s.csv")


def test_kcore_threshold_and_its_removed_numbers(tmp_path):
    data = split_file(seed=1)
    five = load_interactions_csv(data, k=5, file_label="s.csv")
    eleven = load_interactions_csv(data, k=8, file_label="s.csv")
    assert eleven.n_interactions < five.n_interactions
    note = eleven.notes[-1]
    assert note.startswith("k-core filter (k = 8") and f"{eleven.n_users:,}" not in note.split("removed")[0]
    removed = int(note.split("items and ")[1].split(" of ")[0].replace(",", ""))
    assert removed == load_interactions_csv(data, k=1, file_label="s.csv").n_interactions - eleven.n_interactions


def test_cli_train_takes_kcore_and_the_checkpoint_remembers_the_split(tmp_path):
    interactions = tmp_path / "interactions.csv"
    interactions.write_bytes(split_file(n_users=60, n_items=40, seed=2))
    result = subprocess.run([sys.executable, "-m", "core", "train", "--data", f"csv:{interactions}", "--kcore", "3",
                             "--epochs", "2", "--dim", "8", "--out", str(tmp_path / "m"), "--device", "cpu"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "k-core filter (k = 3" in result.stdout and "split: the file's own split column" in result.stdout
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["split_mode"] == "file" and meta["dataset"]["kcore"] == 3


# ------------------------------------------------------------------------------------------------ a model trained elsewhere


@pytest.fixture(scope="module")
def demo_model():
    from core.data import make_synthetic
    from core.training import TrainConfig, train_model

    dataset = make_synthetic(n_users=300, n_items=400, seed=5)
    split = split_per_user(dataset, seed=0)
    return dataset, split, train_model("bpr", split, TrainConfig(dim=16, lr=5e-3, max_epochs=5, seed=0))


@pytest.mark.parametrize("fmt", ["csv", "npz"])
def test_a_bpr_mf_exported_and_uploaded_back_gives_the_same_ndcg(demo_model, fmt):
    from core.metrics import evaluate_full
    from core.uploads import interactions_bytes, model_tables_bytes, prepare_external_model

    dataset, split, trained = demo_model
    users, items = model_tables_bytes(trained.model, dataset, fmt)
    order = np.random.default_rng(0).permutation(dataset.n_users)  # the user table's rows in another order
    shuffled = embeddings_bytes(trained.model.user_table().numpy()[order], dataset.user_ids[order], fmt)
    attributes = pd.DataFrame(dataset.attributes).assign(user_id=dataset.user_ids).to_csv(index=False).encode()
    external = prepare_external_model(shuffled, items, interactions_bytes(split), attributes, f"users.{fmt}",
                                      f"items.{fmt}", "interactions.csv", "attributes.csv")
    assert external.split.mode == "file"
    assert np.array_equal(external.split.test, split.test) and np.array_equal(external.split.valid, split.valid)
    again = evaluate_full(external.model.scorer(), external.split, "test")
    assert again.metrics["NDCG@20"] == pytest.approx(trained.test.metrics["NDCG@20"], abs=1e-6)
    assert again.metrics["HR@20"] == pytest.approx(trained.test.metrics["HR@20"], abs=1e-6)
    assert external.dataset.attributes["gender"].tolist() == dataset.attributes["gender"].tolist()
    # an item the interactions need but the item table lacks is refused, by id
    frame = pd.read_csv(io.BytesIO(model_tables_bytes(trained.model, dataset, "csv")[1])).iloc[1:]
    with pytest.raises(DataError, match=rf"1 items of interactions.csv have no row in items.csv \(ids {dataset.item_ids[0]}\)"):
        prepare_external_model(users, frame.to_csv(index=False).encode(), interactions_bytes(split), None,
                               f"users.{fmt}", "items.csv", "interactions.csv")
