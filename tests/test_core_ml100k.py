"""MovieLens-100K, full ranking, per-user 80/10/10 split: LightGCN ≥ BPR-MF on NDCG@20, both ≥ 0.20.

BPR-MF uses the default configuration. LightGCN's default run (≈75 s here) is in bench/train.py; the test uses a
shorter schedule (higher learning rate, bigger batches, at most 20 epochs), which can only make LightGCN weaker,
so passing it is the stronger statement.
"""
import pytest

from core.training import TrainConfig, train_model


@pytest.fixture(scope="module")
def bpr(ml100k_bpr):
    return ml100k_bpr


def test_bpr_mf_quality(bpr):
    assert bpr.test["NDCG@20"] >= 0.20
    assert bpr.test.protocol == "full" and bpr.test.n_users == 943
    assert bpr.best_epoch < bpr.epochs_run  # early stopping on validation, not the epoch budget, ended it


def test_lightgcn_at_least_as_good_as_bpr_mf(ml100k_split, bpr):
    lightgcn = train_model("lightgcn", ml100k_split, TrainConfig(lr=2e-2, batch_size=4096, max_epochs=20, patience=4))
    assert lightgcn.test["NDCG@20"] >= 0.20
    assert lightgcn.test["NDCG@20"] >= bpr.test["NDCG@20"]
