"""Data deletion (core.unlearning.deletion): requests, methods, the one-scan evaluation, saving and the CLI, on the
built-in demo with short training so the file runs in about a minute; a forget run is recorded in the run history
(no forgotten ids kept) and its report says the verdicts in words."""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch

from conftest import on
from core.checkpoint import load_model, save_model
from core.cli import main
from core.data import DataError
from core.metrics import evaluate_full
from core.models import LightGCN
from core.runstore import RunStore
from core.training import TrainConfig, train_model
from core.unlearning.deletion import (
    DELETERS, DeletionMethod, Retrain, Tolerance, evaluate_deletion, make_deleter, random_interactions,
    random_users, read_request, request_for_items, request_for_pairs, request_for_users,
)
from core.unlearning.deletion.evaluation import judge
from core.unlearning.deletion.completeness import make_probe, scan
from core.unlearning.deletion.saved import OMEGA_FILE, model_meta, save_deleted_model
from core.unlearning.deletion.tables import layer0_tables, pair_scores, with_tables

CONFIG = TrainConfig(max_epochs=8, patience=8, seed=0)
# LightGCN propagates the whole graph for every batch: large batches and few epochs keep the tests short
LIGHTGCN_CONFIG = replace(CONFIG, max_epochs=2, batch_size=16384)
FAST = {"finetune": {"epochs": 1}, "reverse_bpr": {"epochs": 1}, "lightul": {"steps": 30},
        "influence": {"cg_steps": 5, "max_pairs": 5000}, "sisa": {"n_shards": 2, "max_epochs": 1}}


@pytest.fixture(scope="module")
def trained(demo_split):
    return {"bpr": train_model("bpr", demo_split, CONFIG),
            "lightgcn": train_model("lightgcn", demo_split, LIGHTGCN_CONFIG)}


@pytest.fixture(scope="module")
def request_1pct(demo_split):
    return random_interactions(demo_split, 0.01, seed=0)


@pytest.fixture(scope="module")
def retrained(trained, request_1pct):
    return Retrain().unlearn(trained["bpr"].model, request_1pct.split, request_1pct, train_config=CONFIG)


@dataclass
class DoNothing(DeletionMethod):
    """A method that changes nothing: its every number must equal the original model's."""

    name = "nothing"
    label = "Do nothing"

    def _unlearn(self, model, request, progress, device, train_config, shards):
        return copy.deepcopy(model), [], "", {}


# ------------------------------------------------------------------------------------------- requests


def test_requests_resolve_dataset_ids_and_refuse_unknown_or_empty(demo_split):
    dataset = demo_split.dataset
    u, i = demo_split.train[0]
    request = request_for_pairs(demo_split, [dataset.user_ids[u]], [dataset.item_ids[i]], "pairs.csv")
    assert request.pairs.tolist() == [[u, i]]
    assert len(request.retained_split.train) == len(demo_split.train) - 1
    with pytest.raises(DataError, match=r"pairs.csv: 2 user id\(s\) not in the model's dataset: 999999, 888888"):
        request_for_pairs(demo_split, [999999, 888888], [dataset.item_ids[i]] * 2, "pairs.csv")
    with pytest.raises(DataError, match="not in the model's dataset: 777777"):
        request_for_items(demo_split, [777777], "items.csv")
    with pytest.raises(DataError, match="forgets nothing"):
        request_for_users(demo_split, [], "users.csv")
    with pytest.raises(DataError, match="empty.csv: the file has a header but no rows; a forget request must name"):
        read_request(b"user,item\n", demo_split, "empty.csv")
    # a held-out pair alone is never trained on: nothing to forget
    tu, ti = demo_split.test[0]
    with pytest.raises(DataError, match="never trained on them"):
        request_for_pairs(demo_split, [dataset.user_ids[tu]], [dataset.item_ids[ti]], "held.csv")


def test_user_and_item_requests_forget_every_interaction(demo_split):
    dataset = demo_split.dataset
    users = read_request(f"user_id\n{dataset.user_ids[3]}\n{dataset.user_ids[5]}\n".encode(), demo_split, "u.csv")
    assert users.kind == "users" and set(users.affected_users) == {3, 5}
    assert len(users.pairs) == int(np.isin(demo_split.train[:, 0], [3, 5]).sum())
    retained = users.retained_split
    for part in (retained.train, retained.valid, retained.test):  # nobody is evaluated on what was deleted
        assert not np.isin(part[:, 0], [3, 5]).any()
    items = request_for_items(demo_split, [dataset.item_ids[7]])
    assert (items.pairs[:, 1] == 7).all() and not (items.retained_split.test[:, 1] == 7).any()
    demo = random_users(demo_split, 0.05, seed=1)
    assert len(demo.users) == round(0.05 * demo_split.n_users)
    with pytest.raises(DataError, match="between 0 and 1"):
        random_interactions(demo_split, 5)


# ------------------------------------------------------------------------------------------- the one scan


def test_ranking_and_completeness_come_from_one_scorer_call(trained, request_1pct):
    model = trained["bpr"].model
    calls, outputs = [], []
    original = model.scorer

    def recording_scorer(*args, **kwargs):
        score = original(*args, **kwargs)
        calls.append(1)

        def wrapped(users):
            out = score(users)
            outputs.append((users.cpu().numpy(), out.detach().cpu().numpy()))
            return out
        return wrapped

    probe = make_probe(request_1pct)
    spy = copy.deepcopy(model)
    spy.scorer = recording_scorer
    scanned = scan(spy, request_1pct, probe)
    assert len(calls) == 1  # one scoring function for every number below
    scores = np.concatenate([o for _, o in outputs])
    users = np.concatenate([u for u, _ in outputs])
    assert (users == np.arange(request_1pct.split.n_users)).all()  # each user scored once
    forgotten = probe.forgotten
    np.testing.assert_allclose(scanned.forgotten_scores, scores[forgotten[:, 0], forgotten[:, 1]], rtol=1e-6)
    # and the ranking it read NDCG from is core.metrics' full ranking of the same scores
    reference = evaluate_full(model.scorer(), request_1pct.retained_split, "test", ks=(20, 50))
    for name in ("NDCG@20", "NDCG@50", "HR@20", "Recall@20"):
        assert scanned.ranking[name] == pytest.approx(reference[name], abs=1e-6)
    # the forget rank is the position in that same masked ranking
    u, i = forgotten[0]
    row = scores[u].copy()
    seen = request_1pct.retained_split
    row[np.r_[seen.train[seen.train[:, 0] == u, 1], seen.valid[seen.valid[:, 0] == u, 1]]] = -np.inf
    order = np.argsort(-row, kind="stable")
    assert scanned.forget_ranks[0] == int(np.flatnonzero(order == i)[0])


@pytest.fixture(scope="module")
def nothing_report(trained, request_1pct, retrained):
    model = trained["bpr"].model
    nothing = DoNothing().unlearn(model, request_1pct.split, request_1pct)
    return evaluate_deletion(model, request_1pct, [retrained, nothing])


def test_do_nothing_equals_the_original_and_retrain_is_seen(nothing_report):
    original, retrain, do_nothing = nothing_report.rows
    assert do_nothing.accuracy == original.accuracy
    assert do_nothing.completeness == original.completeness
    # the measures see deletion at all: Retrain never trained on the forgotten pairs, and each measure alone sets
    # it apart from the original by more than the verdict's tolerance (on the demo: 0.085, 0.098 and 0.083)
    auc, tolerance = "forgotten-vs-retained AUC", Tolerance()
    assert retrain.completeness[auc] > original.completeness[auc] + tolerance.auc
    assert retrain.completeness["forget HR@20"] < original.completeness["forget HR@20"] - tolerance.hit_rate
    assert retrain.completeness["MIA AUC"] < original.completeness["MIA AUC"] - tolerance.mia
    assert do_nothing.verdict == "under-forgets" and retrain.verdict == "reference"
    frame = nothing_report.to_frame()
    assert list(frame["method"]) == ["Original", "Retrain", "Do nothing"]
    assert {"verdict", "seconds", "speed-up vs Retrain", "NDCG@20", "NDCG@50", "HR@20", "Recall@20",
            "forget HR@20", "median forgotten rank", "MIA AUC", "Jaccard@20 vs Retrain"} <= set(frame.columns)
    assert frame.loc[1, "Jaccard@20 vs Retrain"] == 1.0


def test_verdict_uses_the_stated_tolerance(nothing_report):
    original, retrain, do_nothing = nothing_report.rows
    assert judge(do_nothing.completeness, retrain.completeness, Tolerance())[0] == "under-forgets"
    assert judge(do_nothing.completeness, retrain.completeness, Tolerance(auc=1, hit_rate=1, mia=1))[0] == \
        "matches Retrain"
    auc = "forgotten-vs-retained AUC"
    pushed = {**retrain.completeness, auc: retrain.completeness[auc] + 0.2}
    assert judge(pushed, retrain.completeness, Tolerance())[0] == "over-forgets"


# ------------------------------------------------------------------------------------------- methods


@pytest.mark.parametrize("kind", ["bpr", "neumf", "lightgcn"])
def test_pair_scores_match_the_models_scorer(demo_split, kind):
    from core.models import build_model

    model = build_model(kind, demo_split.n_users, demo_split.n_items, train_pairs=demo_split.train, dim=16)
    users_table, items_table = layer0_tables(model)
    users_table = users_table + 0.05 * torch.randn_like(users_table)
    edited = with_tables(model, users_table, items_table)
    users = torch.arange(0, 40)
    items = torch.arange(100, 140)
    full = edited.scorer()(users)
    torch.testing.assert_close(pair_scores(model, users_table, items_table, users, items),
                               full[torch.arange(40), items], rtol=1e-5, atol=1e-5)


def _forgotten_margin(model, request, device) -> float:
    """Mean score of the forgotten pairs minus that of the same users' retained training pairs (lower = forgotten)."""
    scores = model.scorer()(torch.as_tensor(request.affected_users, device=device)).cpu()
    row = {u: r for r, u in enumerate(request.affected_users)}
    kept = request.retained_split.train[np.isin(request.retained_split.train[:, 0], request.affected_users)]
    forgotten = scores[[row[u] for u in request.pairs[:, 0]], request.pairs[:, 1]]
    retained = scores[[row[u] for u in kept[:, 0]], kept[:, 1]]
    return float(forgotten.mean() - retained.mean())


def test_every_method_forgets_on_both_models_and_device(trained, request_1pct, device):
    for kind, result in trained.items():
        model = on(result.model, device)
        names = [n for n in DELETERS if n != "retrain" and make_deleter(n).applies(model)]  # Retrain: tested above
        assert ("edge_drop" in names) == (kind == "lightgcn") and ("sisa" in names)
        before = _forgotten_margin(model, request_1pct, device)
        weights = {k: v.clone() for k, v in model.state_dict().items()}
        for name in names:
            deleted = make_deleter(name, **FAST.get(name, {})).unlearn(
                model, request_1pct.split, request_1pct, device=device, train_config=result.config)
            assert deleted.model.device.type == torch.device(device).type, deleted.label
            assert deleted.device.startswith(torch.device(device).type)
            users = torch.as_tensor(request_1pct.affected_users, device=device)
            assert torch.isfinite(deleted.model.scorer()(users)).all(), deleted.label
            if name not in ("finetune", "edge_drop", "sisa"):
                after = _forgotten_margin(deleted.model, request_1pct, device)
                assert after < before, f"{kind} {deleted.label} did not lower the forgotten pairs' scores"
        # the original is untouched: its weights bit for bit (scores recomputed on a GPU may differ in the last bit)
        assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())


def test_lightul_applies_omega_in_every_score_and_saves_it(tmp_path, trained, request_1pct, demo):
    model = trained["bpr"].model
    result = make_deleter("lightul", steps=30).unlearn(model, request_1pct.split, request_1pct)
    users_table, _ = layer0_tables(result.model)
    untouched = np.setdiff1d(np.arange(model.n_users), request_1pct.affected_users)
    torch.testing.assert_close(users_table[untouched], model.user_emb.detach()[untouched])  # affected rows only
    affected = request_1pct.affected_users
    assert not torch.equal(users_table[affected], model.user_emb.detach()[affected])
    folder = save_deleted_model(tmp_path / "lightul", result, model_meta(model, demo), request_1pct)
    assert (folder / OMEGA_FILE).exists()
    loaded, meta = load_model(folder, demo)
    users = torch.arange(50)
    torch.testing.assert_close(loaded.scorer()(users), result.model.scorer()(users))
    assert meta["deletion"]["method"] == "lightul"
    assert meta["deletion"]["forgotten_interactions"] == request_1pct.n_pairs


def test_lightgcn_edge_drop_keeps_its_graph_when_loaded(tmp_path, trained, request_1pct, demo_split, demo):
    model = trained["lightgcn"].model
    result = make_deleter("edge_drop").unlearn(model, demo_split, request_1pct)
    assert len(result.model.train_pairs) == len(demo_split.train) - request_1pct.n_pairs
    folder = save_deleted_model(tmp_path / "edge", result, model_meta(model, demo), request_1pct)
    loaded, _ = load_model(folder, demo, train_pairs=demo_split.train)  # the dataset's split must not restore it
    assert isinstance(loaded, LightGCN) and len(loaded.train_pairs) == len(result.model.train_pairs)
    torch.testing.assert_close(loaded.scorer()(torch.arange(20)), result.model.scorer()(torch.arange(20)))


def test_sharded_retrain_retrains_only_touched_shards(trained, demo_split):
    from core.unlearning.deletion import derive_shards

    shards = derive_shards(demo_split.n_users, 4, seed=0)
    one_user = request_for_users(demo_split, [demo_split.dataset.user_ids[0]])
    result = make_deleter("sisa", max_epochs=1).unlearn(trained["bpr"].model, demo_split, one_user, shards=shards,
                                                       train_config=CONFIG)
    assert "1 of 4 shards retrained" in result.notes and "kept with the model" in result.notes
    retrained_shards = {h["shard"] for h in result.history if h["retrained"]}
    assert retrained_shards == {int(shards[0])}
    assert result.model.dim == 4 * CONFIG.dim  # one block per shard
    derived = make_deleter("sisa", max_epochs=1, n_shards=2).unlearn(trained["bpr"].model, demo_split, one_user)
    assert "no shard assignment" in derived.notes


# ------------------------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, trained, demo):
    folder = tmp_path_factory.mktemp("model")
    save_model(folder, replace(trained["bpr"], config=replace(CONFIG, max_epochs=2)), demo, spec="synthetic")
    return folder


@pytest.fixture(scope="module")
def cli_forget(tmp_path_factory, saved_model):
    """One `python -m core forget` run (LightUL-style, 1% of interactions) recorded in its own run history."""
    folder = tmp_path_factory.mktemp("forget")
    code = main(["forget", "--model", str(saved_model), "--random-interactions", "0.01", "--method", "lightul",
                 "--param", "lightul.steps=20", "--out", str(folder / "out"), "--report", str(folder / "report.json"),
                 "--device", "cpu", "--runs", str(folder / "runs.sqlite")])
    return folder, code, json.loads((folder / "report.json").read_text())


def test_cli_forget_writes_models_and_a_report(cli_forget, demo):
    folder, code, rows = cli_forget
    assert [r["method"] for r in rows] == ["Original", "Retrain", "LightUL-style"]
    verdict = rows[-1]["verdict"]
    assert code == (0 if verdict == "matches Retrain" else 1)
    assert rows[1]["verdict"] == "reference" and rows[1]["speed-up vs Retrain"] == 1.0
    for method in ("retrain", "lightul"):
        loaded, meta = load_model(folder / "out" / method, demo)
        assert meta["deletion"]["method"] == method
        # the saved model's test metrics are the report's numbers
        assert meta["metrics"]["test"]["NDCG@20"] == pytest.approx(rows[1 if method == "retrain" else 2]["NDCG@20"])


def test_cli_forget_is_recorded_with_its_table_and_verdicts(cli_forget, demo, demo_split):
    folder, _, rows = cli_forget
    (record,) = RunStore(folder / "runs.sqlite").records()
    assert (record.kind, record.status, record.source) == ("deletion", "finished", "cli")
    assert (record.dataset, record.fingerprint, record.model) == (demo.name, demo.fingerprint, "BPR-MF")
    assert record.params["methods"] == ["retrain", "lightul"] and record.params["method params"]["lightul"]["steps"] == 20
    request = random_interactions(demo_split, 0.01, seed=0)
    assert record.params["request"] == {
        "kind": "random interactions", "description": request.description, "interactions": request.n_pairs,
        "users affected": len(request.affected_users), "items affected": len(request.affected_items),
        "whole users": 0, "whole items": 0, "seed": 0}
    # the comparison table is the command's own report, row for row
    table = record.results["tables"]["comparison"]
    assert [r["method"] for r in table] == [r["method"] for r in rows]
    for kept, written in zip(table, rows):
        assert kept["verdict"] == written["verdict"]
        assert kept["forgotten-vs-retained AUC"] == pytest.approx(written["forgotten-vs-retained AUC"])
        assert kept["NDCG@20"] == pytest.approx(written["NDCG@20"])
    assert record.metrics["LightUL-style: MIA AUC"] == pytest.approx(rows[2]["MIA AUC"])
    assert record.verdicts["LightUL-style"]["status"] == rows[2]["verdict"]
    assert set(record.verdicts) == {"LightUL-style"}  # Retrain is the reference, in the table
    assert f"{rows[2]['forgotten-vs-retained AUC']:.3f}" in record.verdicts["LightUL-style"]["explanation"]
    assert record.seconds >= rows[1]["seconds"] + rows[2]["seconds"]  # the whole run: updates and evaluation
    assert record.artifacts == ("comparison.parquet",)


def test_the_history_keeps_no_forgotten_ids(cli_forget, demo_split):
    """Neither the database nor the run's files hold the forgotten users' or items' ids: integers standing alone in
    them match hardly any of the forgotten users' ids (a list of them would match every one)."""
    import re
    import sqlite3

    folder, _, _ = cli_forget
    store = RunStore(folder / "runs.sqlite")
    (record,) = store.records()
    with sqlite3.connect(folder / "runs.sqlite") as db:
        text = "\n".join(db.iterdump())
    frame = store.artifact(record.run_id, "comparison.parquet")
    assert not {"user", "item", "user_id", "item_id"} & set(frame.columns)
    text += frame.to_csv()
    request = random_interactions(demo_split, 0.01, seed=0)
    dataset = demo_split.dataset
    numbers = {int(t) for t in re.findall(r"(?<![\d.eE+-])\d+(?![\d.])", text)}
    users = set(dataset.user_ids[request.affected_users].tolist())
    assert len(users) >= 100 and len(users & numbers) < 0.2 * len(users)
    assert '"user"' not in text and '"item"' not in text and "pairs" not in record.params["request"]


def test_the_report_of_a_deletion_run_shows_its_table_and_verdicts_in_words(cli_forget, tmp_path):
    import re

    folder, _, rows = cli_forget
    store = RunStore(folder / "runs.sqlite")
    (record,) = store.records()
    assert main(["report", record.run_id[:8], "--runs", str(store.path), "--out", str(tmp_path / "run.html")]) == 0
    page = (tmp_path / "run.html").read_text()
    assert not re.search(r"<script[^>]+src=", page)  # opens with no network
    assert "<h3>Comparison</h3>" in page and "forgotten-vs-retained AUC" in page and "MIA AUC" in page
    for row in rows:
        assert f"<td>{row['method']}</td>" in page and f"<td>{row['verdict']}</td>" in page
    words = {"matches Retrain": "LightUL-style: matches Retrain (forgets as completely as retraining",
             "under-forgets": "LightUL-style: under-forgets (the model still remembers the forgotten data",
             "over-forgets": "LightUL-style: over-forgets (pushes the forgotten items further down"}[rows[2]["verdict"]]
    assert words in page and "Retrain (retrained from scratch without the forgotten data, the gold standard)" in page
    assert record.fingerprint in page and record.params["request"]["description"] in page


def test_cli_refuses_unknown_ids_with_exit_2(tmp_path, saved_model, capsys):
    request = tmp_path / "request.csv"
    request.write_text("user,item\n1,1\n123456,1\n")
    code = main(["forget", "--model", str(saved_model), "--request", str(request), "--method", "lightul",
                 "--out", str(tmp_path / "out"), "--report", str(tmp_path / "r.json")])
    assert code == 2
    err = capsys.readouterr().err
    assert "request.csv: 1 user id(s) not in the model's dataset: 123456" in err and "Traceback" not in err
    code = main(["forget", "--model", str(saved_model), "--random-users", "0.05", "--method", "edge_drop",
                 "--out", str(tmp_path / "out"), "--report", str(tmp_path / "r.json")])
    assert code == 2 and "does not apply to BPR-MF" in capsys.readouterr().err


def test_a_cancelled_deletion_job_stops_and_is_recorded_cancelled(trained, request_1pct, demo):
    """The page's path: a deletion as a background job with its run recorded; Cancel stops it at the next progress
    report (within seconds, Retrain mid-training) and the run is kept as cancelled."""
    import time

    from core.jobs import JobRunner
    from core.recording import deletion_fields, deletion_start
    from core.unlearning.deletion import run_deletion

    store = RunStore(None)
    methods = [make_deleter("lightul", steps=20)]
    model = trained["bpr"].model
    job = JobRunner().submit(
        "deletion", lambda progress, cancel: run_deletion(model, request_1pct, methods, progress=progress,
                                                          train_config=CONFIG),
        "Deletion", store=store, finish=lambda report, run_ids: deletion_fields(report, 0.0),
        record=deletion_start(request_1pct, methods, Tolerance(), model.label, "cpu", demo, "app"))
    deadline = time.time() + 60
    while job.progress == 0 and not job.done and time.time() < deadline:
        time.sleep(0.05)
    job.cancel()
    assert job.wait(60) and job.status == "cancelled"
    (record,) = store.records()
    assert (record.kind, record.status, record.message) == ("deletion", "cancelled", "cancelled by the user")
    assert record.params["request"]["interactions"] == request_1pct.n_pairs and not record.results
    store.close()
