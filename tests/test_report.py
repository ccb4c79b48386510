"""Reports of kept runs: built from real training, audit and unlearning results recorded in a store, one HTML file
that needs no network (plotly.js inlined, no external script), every number with its interval, verdicts in words;
the same as JSON and CSV; and `python -m core report` writing them."""
import json
import re

import pandas as pd
import pytest
import torch

from core.audit import run_audit
from core.cli import main
from core.evaluation import evaluate_unlearning
from core.recording import audit_fields, recorded, training_fields, unlearning_fields
from core.report import comparison_frame, find_runs, to_csv, to_html, to_json
from core.runstore import RunStore
from core.unlearning.attribute import make_unlearner


@pytest.fixture(scope="module")
def kept(tmp_path_factory, demo, demo_bpr, demo_labels):
    """A store with a training run, an audit and an unlearning run of the demo's BPR-MF (gender only, logistic
    regression attacker, so it stays fast)."""
    store = RunStore(tmp_path_factory.mktemp("runs") / "runs.sqlite")
    labels = {"gender": demo_labels["gender"]}
    common = dict(dataset=demo.name, fingerprint=demo.fingerprint, model="BPR-MF", attributes=["gender"], device="cpu")
    with recorded(store, "training", "BPR-MF on the demo", **common) as run:
        run.finish(**training_fields(demo_bpr))
    table = demo_bpr.model.user_table().detach()
    audit = run_audit(table, labels, attackers=("logreg",), n_permutations=40, seed=0)
    with recorded(store, "audit", "audit of BPR-MF", params={"protocol": audit.protocol}, **common) as run:
        run.finish(**audit_fields({"user": audit}, demo_bpr.test))
    result = make_unlearner("leace").fit_transform(table, labels)
    comparison = evaluate_unlearning(table, [result], labels, attackers=("logreg",))
    with recorded(store, "unlearning", "linear eraser", **common) as run:
        run.finish(**unlearning_fields(comparison.rows[-1], comparison.rows[0]))
    return store, audit, comparison


def test_html_is_self_contained_and_states_provenance_numbers_and_verdicts(kept):
    store, audit, comparison = kept
    records = store.records()
    page = to_html(records)
    # no network needed: no external script, stylesheet or image; plotly.js is inlined
    assert not re.search(r"<script[^>]+src=", page)
    assert not re.search(r"<link[^>]+href=[\"']?https?:", page)
    assert not re.search(r"<img[^>]+src=[\"']?https?:", page)
    assert "Plotly.newPlot" in page and len(page) > 1_000_000  # the library itself is in the file
    assert "Attacker AUC against recommendation quality (NDCG@20)" in page and "Runtime per run" in page
    demo = records[0]
    for fact in (demo.dataset, demo.fingerprint, "BPR-MF", demo.versions["torch"], demo.versions["numpy"],
                 audit.protocol, "0.5 means no better than chance", "two-sided"):
        assert fact in page, fact
    verdict = audit.verdicts[0]
    assert f"{verdict.auc:.3f} [{verdict.auc_low:.3f}, {verdict.auc_high:.3f}]" in page  # number with its interval
    words = {"leaks": "gender: leaks (an attacker recovers it", "no leak": "gender: no leak",
             "inconclusive": "gender: inconclusive"}[verdict.status]
    assert words in page
    ndcg = demo.metrics["NDCG@20"]
    assert f"{ndcg:.4g}" in page


def test_comparison_frame_and_csv_carry_every_number_with_its_interval(kept):
    store, audit, comparison = kept
    records = store.records()
    frame = comparison_frame(records)
    assert list(frame["kind"]) == ["training", "audit", "unlearning"]
    after = comparison.rows[-1].verdicts["gender"]
    assert frame.loc[2, "AUC gender [95% interval]"] == f"{after.auc:.3f} [{after.auc_low:.3f}, {after.auc_high:.3f}]"
    assert frame.loc[1, "verdict"] == audit.verdicts[0].status
    import io

    numbers = pd.read_csv(io.StringIO(to_csv(records)))
    row = numbers[(numbers["run"] == records[1].run_id) & (numbers["metric"] == "AUC gender")].iloc[0]
    v = audit.verdicts[0]
    assert (row["value"], row["low"], row["high"]) == pytest.approx((v.auc, v.auc_low, v.auc_high))
    assert set(numbers["fingerprint"]) == {records[0].fingerprint}
    runtime = numbers[(numbers["run"] == records[0].run_id) & (numbers["metric"] == "runtime s")]["value"].iloc[0]
    assert runtime == pytest.approx(records[0].seconds)


def test_json_has_the_runs_and_the_comparison(kept):
    store, audit, _ = kept
    records = store.records()
    data = json.loads(to_json(records))
    assert [r["run_id"] for r in data["runs"]] == [r.run_id for r in records]
    assert data["runs"][1]["verdicts"]["gender"]["status"] == audit.verdicts[0].status
    assert data["runs"][1]["results"]["tables"]["attacks"][0]["AUC low"] == pytest.approx(
        audit.scores[0].metrics["AUC"].low)
    assert "0.5 means no better than chance" in data["explanations"]["AUC"]
    assert len(data["comparison"]) == 3


def test_the_command_line_writes_reports_by_suffix_and_refuses_unknown_runs(kept, tmp_path, capsys):
    store, _, _ = kept
    ids = [r.run_id for r in store.records()]
    assert main(["--runs", str(store.path), "report", ids[1][:6], ids[2], "--out", str(tmp_path / "c.html")]) == 0
    assert "Comparison of 2 runs" in (tmp_path / "c.html").read_text()
    assert main(["report", ids[1], "--runs", str(store.path), "--out", str(tmp_path / "c.json")]) == 0
    assert json.loads((tmp_path / "c.json").read_text())["runs"][0]["run_id"] == ids[1]
    assert main(["report", ids[1], "--runs", str(store.path), "--out", str(tmp_path / "c.txt"), "--format", "csv"]) == 0
    assert (tmp_path / "c.txt").read_text().startswith("run,date,kind")
    assert main(["report", "nosuchrun", "--runs", str(store.path), "--out", str(tmp_path / "x.html")]) == 2
    assert "matches no run" in capsys.readouterr().err
    with pytest.raises(Exception, match="matches no run"):
        find_runs(store, ["nosuchrun"])


def test_a_cli_audit_is_recorded(tmp_path, demo_bpr, demo):
    """`python -m core audit` records its run (what the History page lists) with the model's fingerprint."""
    from core.checkpoint import save_model

    save_model(tmp_path / "model", demo_bpr, demo, spec="synthetic")
    runs = tmp_path / "runs.sqlite"
    code = main(["audit", "--model", str(tmp_path / "model"), "--attribute", "gender", "--attacker", "logreg",
                 "--permutations", "20", "--runs", str(runs)])
    assert code == 1  # the demo's gender leaks (AUC ≈ 0.8), so the gate fails
    (record,) = RunStore(runs).records()
    assert (record.kind, record.status, record.source, record.fingerprint) == ("audit", "finished", "cli",
                                                                               demo.fingerprint)
    assert record.verdicts["gender"]["status"] == "leaks"
    assert record.metrics["NDCG@20"] == pytest.approx(demo_bpr.test.metrics["NDCG@20"], abs=1e-6)
    assert torch.cuda.is_available() or record.device == "cpu"
