"""The job runner: work runs off the calling thread, a cancel stops a real core task within seconds, the same key
finds the same job (no duplicate), and each job records its run: running -> finished / failed / cancelled."""
import threading
import time

import pytest

from core.jobs import Cancelled, JobRunner
from core.runstore import RunStore


def test_a_job_runs_off_the_calling_thread_reports_progress_and_records_its_run():
    store = RunStore()
    runner = JobRunner()
    seen = {}
    release = threading.Event()

    def work(progress, cancel):
        seen["thread"] = threading.current_thread().name
        progress(0.5, "half way")
        release.wait(30)
        return 42

    job = runner.submit("k", work, "answer", store=store, record={"kind": "audit", "label": "answer"},
                        finish=lambda result, run_ids: {"metrics": {"answer": result}, "seconds": 1.0})
    deadline = time.time() + 10
    while job.message != "half way" and time.time() < deadline:
        time.sleep(0.01)
    assert (job.status, job.progress, job.message) == ("running", 0.5, "half way")
    assert store.get(job.run_ids[0]).status == "running"
    release.set()
    assert job.wait(30)
    assert (job.status, job.result) == ("finished", 42)
    assert seen["thread"] != threading.current_thread().name
    record = store.get(job.run_ids[0])
    assert (record.status, record.metrics) == ("finished", {"answer": 42.0})


def test_the_same_key_finds_the_same_job():
    runner = JobRunner()
    calls = []
    release = threading.Event()

    def work(progress, cancel):
        calls.append(1)
        release.wait(30)
        return len(calls)

    first = runner.submit(("train", "settings"), work, owner="session-a", kind="train")
    second = runner.submit(("train", "settings"), work, owner="session-a", kind="train")  # a rerun or a reload
    assert second is first
    other = runner.submit(("train", "other settings"), work, owner="session-b", kind="train")
    assert other is not first
    release.set()
    assert runner.wait_all(30)
    assert len(calls) == 2
    assert runner.submit(("train", "settings"), work) is first  # a finished job is found, not run again
    assert runner.latest("session-a", "train") is first and runner.latest("session-b", "train") is other


def test_cancel_stops_a_real_training_within_seconds(demo_split):
    """Training BPR-MF for 500 epochs on the demo takes minutes; cancelled after its first progress report, it
    stops at the next one and its run is recorded cancelled."""
    from core.training import TrainConfig, train_model

    store = RunStore()
    runner = JobRunner()
    config = TrainConfig(max_epochs=500, patience=500)
    job = runner.submit("train", lambda progress, cancel: train_model("bpr", demo_split, config, progress=progress),
                        store=store, record={"kind": "training", "label": "BPR-MF"})
    deadline = time.time() + 120
    while job.progress == 0.0 and not job.done and time.time() < deadline:
        time.sleep(0.05)
    assert job.status == "running" and job.progress > 0.0
    job.cancel()
    assert job.wait(30), "the cancelled training did not stop"
    assert job.status == "cancelled" and job.result is None
    assert store.get(job.run_ids[0]).status == "cancelled"
    # a cancelled job is replaced when submitted again
    again = runner.submit("train", lambda progress, cancel: "fresh")
    assert again is not job and again.wait(30) and again.result == "fresh"


def test_a_failure_is_recorded_with_its_reason_and_inline_mode_runs_in_place():
    store = RunStore()
    runner = JobRunner(inline=True)

    def broken(progress, cancel):
        raise ValueError("the attributes table has no user_id column")

    job = runner.submit("x", broken, store=store, record=[{"kind": "unlearning", "label": "a"},
                                                           {"kind": "unlearning", "label": "b"}])
    assert job.done and job.status == "failed"  # inline: finished inside submit
    assert "no user_id column" in job.error
    assert [store.get(r).status for r in job.run_ids] == ["failed", "failed"]
    assert "no user_id column" in store.get(job.run_ids[0]).message


def test_cancel_before_start_and_cancelled_exception():
    runner = JobRunner(inline=True)

    def work(progress, cancel):
        cancel.cancel()
        progress(0.1, "step")  # the next report after a cancel raises
        raise AssertionError("not reached")

    job = runner.submit("y", work)
    assert job.status == "cancelled"
    with pytest.raises(Cancelled):
        job.token.check()


def test_two_sessions_run_at_once_into_one_store_without_mixing(tmp_path, demo_split):
    """Two owners (browser tabs) train different models at the same time with the same store: two jobs, two runs,
    each finished with its own model's numbers; the database stays consistent (a second connection reads both)."""
    from core.recording import training_fields
    from core.training import TrainConfig, train_model

    store = RunStore(tmp_path / "runs.sqlite")
    runner = JobRunner()
    jobs = {}
    for owner, dim in (("tab-a", 16), ("tab-b", 32)):
        config = TrainConfig(dim=dim, max_epochs=2, lr=5e-3)
        jobs[owner] = runner.submit((owner, "train", dim), lambda p, c, config=config: train_model(
            "bpr", demo_split, config, progress=p), owner=owner, kind="train", store=store,
            record={"kind": "training", "label": f"dim {dim}"}, finish=lambda result, ids: training_fields(result))
    assert runner.wait_all(300)
    assert runner.latest("tab-a", "train").result.model.user_table().shape[1] == 16
    assert runner.latest("tab-b", "train").result.model.user_table().shape[1] == 32
    reopened = {r.label: r for r in RunStore(tmp_path / "runs.sqlite").records()}
    assert {label: r.status for label, r in reopened.items()} == {"dim 16": "finished", "dim 32": "finished"}
    for owner, dim in (("tab-a", 16), ("tab-b", 32)):
        assert reopened[f"dim {dim}"].metrics["NDCG@20"] == pytest.approx(jobs[owner].result.test.metrics["NDCG@20"])
