"""The run store: runs kept in SQLite with their artifacts (never pickle), a versioned schema migrated from the
first store, runs of a killed process shown as interrupted, deletion that removes files, owner-only permissions."""
import json
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.runstore import SCHEMA_VERSION, RunStore, default_location, open_store

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("on_disk", [False, True])
def test_runs_are_kept_with_metrics_and_arrays(tmp_path, on_disk):
    store = RunStore(tmp_path / "runs" if on_disk else None)
    table = np.arange(12, dtype=np.float32).reshape(4, 3)
    first = store.add("unlearning", "D2D-R", "demo", {"alpha": 0.5},
                      {"AUC gender mlp": 0.51, "NDCG@20": 0.28}, {"user_table": table}, fingerprint="abc123")
    second = store.add("audit", "original", "demo", metrics={"AUC gender mlp": 0.66, "p": float("nan")})
    assert [r.run_id for r in store.records()] == [first.run_id, second.run_id]
    assert [r.label for r in store.records("audit")] == ["original"]
    np.testing.assert_array_equal(store.array(first.run_id, "user_table"), table)
    assert store.get(first.run_id).artifacts == ("user_table.npy",)
    assert store.get(first.run_id).fingerprint == "abc123"
    frame = store.to_frame()
    assert list(frame["label"]) == ["D2D-R", "original"]
    assert list(frame["status"]) == ["finished", "finished"]
    assert frame.loc[0, "AUC gender mlp"] == pytest.approx(0.51)
    assert store.get(second.run_id).metrics["p"] is None  # NaN is stored as "no value", not as an invalid number
    exported = json.loads(store.export_json())
    assert exported[0]["params"] == {"alpha": 0.5}
    assert "numpy" in exported[0]["versions"] and "python" in exported[0]["versions"]


def test_a_run_goes_from_running_to_finished_with_its_provenance(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    run_id = store.start("audit", "BPR-MF audit", dataset="demo", fingerprint="f00d", model="BPR-MF",
                         attributes=["gender", "age"], params={"protocol": "cv"}, device="cpu", source="cli")
    assert store.get(run_id).status == "running"  # committed at once: another process sees it
    assert RunStore(tmp_path / "runs.sqlite").get(run_id).status == "running"  # its owner (this process) is alive
    verdicts = {"gender": {"status": "leaks", "auc": 0.8, "auc_low": 0.75, "auc_high": 0.85}}
    store.finish(run_id, metrics={"AUC gender": 0.8}, verdicts=verdicts, seconds=1.5,
                 results={"tables": {"attacks": [{"attacker": "MLP", "AUC": 0.8}]}},
                 artifacts={"attacks.parquet": pd.DataFrame({"AUC": [0.8]}), "summary.json": {"a": 1},
                            "weights.safetensors": {"w": np.ones((2, 2), np.float32)}})
    record = RunStore(tmp_path / "runs.sqlite").get(run_id)
    assert (record.status, record.verdict, record.seconds, record.device) == ("finished", "leaks", 1.5, "cpu")
    assert record.attributes == ("gender", "age") and record.model == "BPR-MF" and record.source == "cli"
    assert record.results["tables"]["attacks"][0]["AUC"] == 0.8
    assert set(record.artifacts) == {"attacks.parquet", "summary.json", "weights.safetensors"}
    assert store.artifact(run_id, "attacks.parquet")["AUC"].tolist() == [0.8]
    np.testing.assert_array_equal(store.artifact(run_id, "weights.safetensors")["w"], np.ones((2, 2)))
    failed = store.start("training", "x")
    store.fail(failed, "out of memory")
    assert (store.get(failed).status, store.get(failed).message) == ("failed", "out of memory")


def test_location_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PRIVACY_AUDIT_RUNS", str(tmp_path / "elsewhere" / "mine.sqlite"))
    assert default_location() == tmp_path / "elsewhere" / "mine.sqlite"
    store = open_store()
    store.add("audit", "a", "demo")
    assert (tmp_path / "elsewhere" / "mine.sqlite").exists()
    assert store._db.execute("pragma journal_mode").fetchone()[0] == "wal"


def test_the_first_schema_is_migrated_with_its_arrays(tmp_path):
    """A database written by the first store (no schema_version table, arrays as artifacts/<run>-<name>.npy)
    opens at the current version with its runs finished and its arrays moved into the run's folder."""
    db = sqlite3.connect(tmp_path / "runs.sqlite")
    db.execute("create table runs (run_id text primary key, created text not null, kind text not null, label text "
               "not null, dataset text not null, params text not null, metrics text not null)")
    db.execute("insert into runs values ('abc', '2026-01-01T10:00:00', 'attribute_unlearning', 'D2D-R', 'fp', "
               "'{\"alpha\": 1}', '{\"AUC\": 0.52}')")
    db.commit()
    db.close()
    (tmp_path / "artifacts").mkdir()
    np.save(tmp_path / "artifacts" / "abc-user_table.npy", np.arange(6.0).reshape(2, 3))
    store = RunStore(tmp_path)
    assert store.schema_version == SCHEMA_VERSION == 2
    record = store.get("abc")
    assert (record.kind, record.status, record.metrics, record.params) == ("unlearning", "finished", {"AUC": 0.52},
                                                                           {"alpha": 1})
    np.testing.assert_array_equal(store.array("abc", "user_table"), np.arange(6.0).reshape(2, 3))
    assert not list((tmp_path / "artifacts").glob("*.npy"))
    assert RunStore(tmp_path).schema_version == 2  # opening again migrates nothing


def test_a_newer_schema_is_refused(tmp_path):
    store = RunStore(tmp_path)
    store._db.execute("insert into schema_version values (99, 'future')")
    with pytest.raises(RuntimeError, match="newer version"):
        RunStore(tmp_path)


def test_a_run_of_a_killed_process_is_interrupted(tmp_path):
    """A separate process starts a run and is killed (SIGKILL) before it finishes: the next open says interrupted;
    a run of a live process stays running."""
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from core.runstore import RunStore
        store = RunStore({str(tmp_path)!r})
        print(store.start("training", "killed mid-way"), flush=True)
        time.sleep(120)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        run_id = process.stdout.readline().strip()
        assert RunStore(tmp_path).get(run_id).status == "running"  # its process is alive
    finally:
        process.kill()
        process.wait(timeout=30)
    record = RunStore(tmp_path).get(run_id)
    assert record.status == "interrupted"
    assert "stopped before it finished" in record.message


def test_delete_and_clear_remove_files(tmp_path):
    store = RunStore(tmp_path)
    a = store.add("audit", "a", "fp", arrays={"t": np.ones(3)})
    store.add("audit", "b", "fp")
    assert (tmp_path / "artifacts" / a.run_id / "t.npy").exists()
    store.delete(a.run_id)
    assert [r.label for r in store.records()] == ["b"]
    assert not (tmp_path / "artifacts" / a.run_id).exists()
    with pytest.raises(KeyError):
        store.array(a.run_id, "t")
    store.clear()
    assert store.to_frame().empty


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_an_existing_shared_folder_keeps_its_permissions(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o1777)  # like /tmp
    store = RunStore(shared / "mine.sqlite")
    store.add("audit", "a", "fp", arrays={"t": np.ones(2)})
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert stat.S_IMODE((shared / "mine.sqlite").stat().st_mode) == 0o600
    assert stat.S_IMODE((shared / "artifacts").stat().st_mode) == 0o700


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_database_and_artifacts_are_owner_only(tmp_path):
    os.umask(0o022)  # the usual default: without care, files would be world-readable
    store = RunStore(tmp_path / "runs")
    record = store.add("audit", "a", "fp", arrays={"t": np.ones(3)})
    store.put_artifact(record.run_id, "table.parquet", pd.DataFrame({"x": [1]}))
    paths = [tmp_path / "runs", tmp_path / "runs" / "runs.sqlite", tmp_path / "runs" / "artifacts",
             tmp_path / "runs" / "artifacts" / record.run_id, *(tmp_path / "runs" / "artifacts" / record.run_id).iterdir(),
             *(tmp_path / "runs").glob("runs.sqlite-*")]
    for path in paths:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is readable by others ({oct(mode)})"


def test_object_arrays_odd_names_and_pickle_formats_are_refused():
    store = RunStore()
    with pytest.raises(ValueError, match="pickle"):
        store.add("audit", "a", "fp", arrays={"t": np.array([{"x": 1}], dtype=object)})
    with pytest.raises(ValueError, match="artifact name"):
        store.add("audit", "a", "fp", arrays={"../evil": np.ones(2)})
    with pytest.raises(ValueError, match="artifact name"):
        store.add("audit", "a", "fp", arrays={"model.pkl": np.ones(2)})
    assert store.records() == []  # a refused run leaves nothing behind


def test_a_deletion_run_has_its_slot():
    """Deletion runs (`python -m core forget`, the Deletion page) record like any other kind; verdicts of their own
    are shown as they are."""
    store = RunStore()
    record = store.add("deletion", "Retrain", "demo", metrics={"NDCG@20": 0.1},
                       verdicts={"request": {"status": "forgotten", "explanation": "membership AUC 0.50"}})
    assert (record.kind, record.verdict) == ("deletion", "forgotten")
    assert store.to_frame("deletion")["verdict"].tolist() == ["forgotten"]
