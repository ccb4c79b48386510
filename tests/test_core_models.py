"""Recommenders, training, saved models and the train CLI."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from core.checkpoint import load_model, save_model
from core.data import DataError, make_synthetic, split_per_user
from core.metrics import evaluate_full
from core.models import BPRMF, LightGCN, NeuMF, build_model
from core.training import TrainConfig, train_model

ROOT = Path(__file__).resolve().parents[1]


def test_bpr_scores_with_an_edited_table():
    model = BPRMF(5, 7, dim=4, seed=1)
    edited = torch.randn(5, 4)
    users = torch.tensor([0, 3])
    assert torch.allclose(model.scorer(edited)(users), edited[users] @ model.item_emb.detach().T)
    assert torch.allclose(model.scorer()(users), model.user_emb.detach()[users] @ model.item_emb.detach().T)
    with pytest.raises(ValueError, match=r"shape \(5, 3\)"):
        model.scorer(torch.randn(5, 3))


def test_neumf_fast_scorer_equals_the_pairwise_forward():
    model = NeuMF(6, 9, dim=8, seed=2)
    users = torch.arange(6)
    table = model.user_table()
    assert table.shape == (6, 16)  # GMF and MLP user tables side by side
    expand = lambda t, n: t[:, None, :].expand(6, n, 8)  # noqa: E731
    reference = model._pair_scores(expand(model.gmf_user[users], 9), expand(model.mlp_user[users], 9),
                                   model.gmf_item[None].expand(6, 9, 8), model.mlp_item[None].expand(6, 9, 8))
    assert torch.allclose(model.scorer()(users), reference, atol=1e-5)
    assert set(model.representations()) == {"gmf+mlp", "gmf", "mlp"}


def test_lightgcn_propagation_matches_a_dense_reference():
    pairs = np.array([[0, 0], [0, 1], [1, 1], [2, 2], [2, 0]])
    model = LightGCN(3, 3, dim=4, n_layers=2, train_pairs=pairs, seed=3)
    adjacency = np.zeros((6, 6))
    for u, i in pairs:
        adjacency[u, 3 + i] = adjacency[3 + i, u] = 1
    degree = adjacency.sum(1)
    norm = adjacency / np.sqrt(np.outer(degree, degree))
    layer0 = torch.cat([model.user_emb, model.item_emb]).detach().double().numpy()
    expected = (layer0 + norm @ layer0 + norm @ norm @ layer0) / 3
    representations = model.representations()
    assert np.allclose(representations["propagated"].numpy(), expected[:3], atol=1e-5)
    assert torch.equal(representations["layer0"], model.user_emb.detach())
    scores = model.scorer()(torch.arange(3))
    assert np.allclose(scores.numpy(), expected[:3] @ expected[3:].T, atol=1e-5)


@pytest.mark.parametrize("kind", ["bpr", "neumf", "lightgcn"])
def test_gradients_reach_an_edited_table_but_not_the_model(kind):
    model = build_model(kind, 8, 10, train_pairs=np.array([[u, u % 10] for u in range(8)]), dim=4)
    table = model.user_table().requires_grad_(True)
    model.scorer(table)(torch.arange(8)).sum().backward()
    assert table.grad is not None and table.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


@pytest.fixture(scope="module")
def small_demo_split():
    return split_per_user(make_synthetic(n_users=300, n_items=400, seed=5), seed=0)


@pytest.mark.parametrize("kind", ["bpr", "neumf", "lightgcn"])
def test_training_improves_validation_ndcg_and_is_repeatable(small_demo_split, kind, device):
    config = TrainConfig(dim=16, max_epochs=6, patience=6, lr=1e-2, seed=4)
    untrained = build_model(kind, small_demo_split.n_users, small_demo_split.n_items,
                            train_pairs=small_demo_split.train, dim=16, seed=4).to(device)
    before = evaluate_full(untrained.scorer(), small_demo_split, "valid", ks=(20,), device=device)["NDCG@20"]
    first = train_model(kind, small_demo_split, config, device=device)
    assert first.valid["NDCG@20"] > before + 0.02
    assert first.history[first.best_epoch - 1]["valid NDCG@20"] == pytest.approx(first.valid["NDCG@20"], abs=1e-6)
    second = train_model(kind, small_demo_split, config, device=device)
    assert first.model.device == torch.device(device)
    if torch.device(device).type == "cpu":
        # same seed, same numbers, bitwise, with several threads too (deterministic CPU algorithms)
        assert torch.equal(first.model.user_table(), second.model.user_table())
        assert first.best_epoch == second.best_epoch
    else:  # CUDA's scatter-add is not deterministic: the same seed agrees to a stated tolerance
        assert torch.allclose(first.model.user_table(), second.model.user_table(), atol=1e-3)
    assert not torch.are_deterministic_algorithms_enabled()  # the switch is scoped to training, not left behind


def test_cpu_and_gpu_training_agree_within_tolerance(small_demo_split):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine: the CPU/GPU agreement is checked where one is present")
    config = TrainConfig(dim=16, max_epochs=3, patience=3, lr=1e-2, seed=4)
    cpu = train_model("bpr", small_demo_split, config, device="cpu")
    gpu = train_model("bpr", small_demo_split, config, device="cuda")
    assert gpu.valid["NDCG@20"] == pytest.approx(cpu.valid["NDCG@20"], abs=0.01)


def test_a_saved_model_loads_onto_either_device(saved, small_demo_split, device):
    folder, result = saved
    model, _ = load_model(folder, small_demo_split.dataset, device=device)
    assert model.device == torch.device(device)
    scores = model.scorer()(torch.arange(5, device=device)).cpu()
    assert torch.allclose(scores, result.model.scorer()(torch.arange(5)), atol=1e-5)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, small_demo_split):
    folder = tmp_path_factory.mktemp("saved")
    result = train_model("lightgcn", small_demo_split, TrainConfig(dim=8, max_epochs=2, seed=1))
    save_model(folder, result, small_demo_split.dataset)
    return folder, result


def test_saved_model_round_trip_gives_identical_scores(saved, small_demo_split):
    folder, result = saved
    model, meta = load_model(folder, small_demo_split.dataset)
    users = torch.arange(20)
    assert torch.allclose(model.scorer()(users), result.model.scorer()(users), atol=1e-6)
    assert meta["model"] == "lightgcn" and meta["dataset"]["fingerprint"] == small_demo_split.dataset.fingerprint


def test_loading_refuses_another_dataset(saved):
    with pytest.raises(DataError, match="not on the loaded"):
        load_model(saved[0], make_synthetic(n_users=300, n_items=400, seed=6))


def test_loading_refuses_mismatched_corrupt_or_nan_weights(saved, tmp_path):
    folder, _ = saved
    meta = json.loads((folder / "model.json").read_text())
    tensors = load_file(str(folder / "weights.safetensors"))

    def variant(name, new_meta=meta, new_tensors=tensors, raw=None):
        target = tmp_path / name
        target.mkdir()
        (target / "model.json").write_text(json.dumps(new_meta))
        if raw is not None:
            (target / "weights.safetensors").write_bytes(raw)
        else:
            save_file(new_tensors, str(target / "weights.safetensors"))
        return target

    wrong_dim = {**meta, "config": {**meta["config"], "dim": 16}}
    with pytest.raises(DataError, match="does not match model.json"):
        load_model(variant("dim", new_meta=wrong_dim))
    with pytest.raises(DataError, match="not a readable safetensors file"):
        load_model(variant("corrupt", raw=b"not really weights"))
    poisoned = {**tensors, "user_emb": torch.full_like(tensors["user_emb"], float("nan"))}
    with pytest.raises(DataError, match="NaN"):
        load_model(variant("nan", new_tensors=poisoned))
    with pytest.raises(DataError, match="no model.json"):
        load_model(tmp_path)


def test_train_cli_works_and_reports_metrics(tmp_path):
    out = tmp_path / "model"
    run = subprocess.run(
        [sys.executable, "-m", "core", "train", "--data", "synthetic", "--model", "bpr", "--out", str(out),
         "--epochs", "3", "--dim", "16"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "valid (full ranking" in run.stdout and "test  (full ranking" in run.stdout and "NDCG@20" in run.stdout
    assert (out / "weights.safetensors").exists() and (out / "model.json").exists()


def test_train_cli_explains_a_bad_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item\nalice,3\n")
    run = subprocess.run([sys.executable, "-m", "core", "train", "--data", f"csv:{bad}", "--out", str(tmp_path / "m")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "bad.csv line 2: user 'alice' is not an integer id" in run.stderr
    assert "Traceback" not in run.stderr
