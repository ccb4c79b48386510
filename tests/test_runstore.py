"""The run store keeps runs with their metrics and arrays, in memory or on disk, and never uses pickle."""
import json

import numpy as np
import pytest

from core.runstore import RunStore


@pytest.mark.parametrize("on_disk", [False, True])
def test_runs_are_kept_with_metrics_and_arrays(tmp_path, on_disk):
    store = RunStore(tmp_path / "runs" if on_disk else None)
    table = np.arange(12, dtype=np.float32).reshape(4, 3)
    first = store.add("attribute_unlearning", "D2D-R", "abc123", {"alpha": 0.5},
                      {"AUC gender mlp": 0.51, "NDCG@20": 0.28}, {"user_table": table})
    second = store.add("audit", "original", "abc123", metrics={"AUC gender mlp": 0.66, "p": float("nan")})
    assert [r.run_id for r in store.records()] == [first.run_id, second.run_id]
    assert [r.label for r in store.records("audit")] == ["original"]
    np.testing.assert_array_equal(store.array(first.run_id, "user_table"), table)
    frame = store.to_frame()
    assert list(frame["label"]) == ["D2D-R", "original"]
    assert frame.loc[0, "AUC gender mlp"] == pytest.approx(0.51)
    assert store.get(second.run_id).metrics["p"] is None  # NaN is stored as "no value", not as an invalid number
    exported = json.loads(store.export_json())
    assert exported[0]["params"] == {"alpha": 0.5}


def test_runs_on_disk_survive_a_new_store(tmp_path):
    store = RunStore(tmp_path)
    record = store.add("audit", "x", "fp", metrics={"AUC": 0.7}, arrays={"roc": np.linspace(0, 1, 5)})
    reopened = RunStore(tmp_path)
    assert reopened.get(record.run_id).metrics == {"AUC": 0.7}
    np.testing.assert_allclose(reopened.array(record.run_id, "roc"), np.linspace(0, 1, 5))
    assert list(tmp_path.glob("artifacts/*.npy"))  # plain .npy files, readable without pickle
    np.load(next(tmp_path.glob("artifacts/*.npy")), allow_pickle=False)


def test_delete_and_clear_forget_arrays_too(tmp_path):
    store = RunStore(tmp_path)
    a = store.add("audit", "a", "fp", arrays={"t": np.ones(3)})
    store.add("audit", "b", "fp")
    store.delete(a.run_id)
    assert [r.label for r in store.records()] == ["b"]
    assert not list(tmp_path.glob(f"artifacts/{a.run_id}-*"))
    with pytest.raises(KeyError):
        store.array(a.run_id, "t")
    store.clear()
    assert store.to_frame().empty


def test_object_arrays_and_odd_names_are_refused():
    store = RunStore()
    with pytest.raises(ValueError, match="pickle"):
        store.add("audit", "a", "fp", arrays={"t": np.array([{"x": 1}], dtype=object)})
    with pytest.raises(ValueError, match="artifact name"):
        store.add("audit", "a", "fp", arrays={"../evil": np.ones(2)})
