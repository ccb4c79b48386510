"""Data deletion (core.unlearning.deletion): requests, methods, the one-scan evaluation, saving and the CLI, on the
built-in demo with short training so the file runs in about a minute."""
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
    # the measure sees deletion at all: Retrain never trained on the forgotten pairs
    auc = "forgotten-vs-retained AUC"
    assert retrain.completeness[auc] > original.completeness[auc] + 0.1
    assert retrain.completeness["forget HR@20"] < original.completeness["forget HR@20"]
    assert retrain.completeness["MIA AUC"] < original.completeness["MIA AUC"]
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
        assert _forgotten_margin(model, request_1pct, device) == before  # the original is untouched


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


def test_cli_forget_writes_models_and_a_report(tmp_path, saved_model, demo):
    report = tmp_path / "report.json"
    code = main(["forget", "--model", str(saved_model), "--random-interactions", "0.01", "--method", "lightul",
                 "--param", "lightul.steps=20", "--out", str(tmp_path / "out"), "--report", str(report),
                 "--device", "cpu"])
    rows = json.loads(report.read_text())
    assert [r["method"] for r in rows] == ["Original", "Retrain", "LightUL-style"]
    verdict = rows[-1]["verdict"]
    assert code == (0 if verdict == "matches Retrain" else 1)
    assert rows[1]["verdict"] == "reference" and rows[1]["speed-up vs Retrain"] == 1.0
    for method in ("retrain", "lightul"):
        loaded, meta = load_model(tmp_path / "out" / method, demo)
        assert meta["deletion"]["method"] == method
        # the saved model's test metrics are the report's numbers
        assert meta["metrics"]["test"]["NDCG@20"] == pytest.approx(rows[1 if method == "retrain" else 2]["NDCG@20"])


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
