"""Ranking metrics against values worked out by hand on tiny cases (SPEC section 3)."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from core.data import InteractionDataset, Split
from core.metrics import evaluate_full, evaluate_sampled, ranking_metrics_from_scores, top_k_items

L2 = math.log2


def metrics(scores, targets, seen=None, ks=(1, 2, 3, 5, 10)):
    as_bool = lambda rows: torch.tensor(rows, dtype=torch.bool)  # noqa: E731
    out = ranking_metrics_from_scores(
        torch.tensor(scores, dtype=torch.float32), as_bool(targets), None if seen is None else as_bool(seen), ks
    )
    return {name: values.tolist() for name, values in out.items()}


def test_two_relevant_items_by_hand():
    # ranking [0, 1, 2, 3, 4]; relevant items 1 and 3 sit at ranks 2 and 4
    m = metrics([[0.9, 0.8, 0.7, 0.6, 0.5]], [[0, 1, 0, 1, 0]])
    idcg2 = 1 + 1 / L2(3)
    assert m["NDCG@2"][0] == pytest.approx((1 / L2(3)) / idcg2)
    assert m["NDCG@5"][0] == pytest.approx((1 / L2(3) + 1 / L2(5)) / idcg2)
    assert m["NDCG@1"][0] == 0.0 and m["HR@1"][0] == 0.0
    assert m["HR@2"][0] == 1.0
    assert m["Recall@2"][0] == pytest.approx(0.5)  # 1 hit / min(2, 2 relevant)
    assert m["Recall@3"][0] == pytest.approx(0.5)
    assert m["Recall@5"][0] == pytest.approx(1.0)


def test_ties_are_broken_by_the_lower_item_index():
    # three items tie; the stable order is 0, 1, 2, so relevant item 2 is third
    m = metrics([[1.0, 1.0, 1.0, 0.0]], [[0, 0, 1, 0]])
    assert m["HR@2"][0] == 0.0 and m["NDCG@2"][0] == 0.0
    assert m["NDCG@3"][0] == pytest.approx(1 / L2(4))


def test_seen_items_are_never_recommended():
    # item 0 scores highest but was seen in training: item 1 becomes the top recommendation
    m = metrics([[5.0, 4.0, 3.0, 2.0]], [[0, 1, 0, 0]], seen=[[1, 0, 0, 0]])
    assert m["NDCG@1"][0] == pytest.approx(1.0)
    assert m["HR@1"][0] == 1.0


def test_k_larger_than_the_item_count():
    m = metrics([[3.0, 2.0, 1.0]], [[0, 0, 1]], ks=(10,))
    assert m["NDCG@10"][0] == pytest.approx(1 / L2(4))  # IDCG over min(K, |test|) = 1 item
    assert m["HR@10"][0] == 1.0 and m["Recall@10"][0] == 1.0


def test_recall_caps_the_denominator_at_k():
    # 3 relevant items, K = 2, both top slots relevant: a perfect top-2 has recall 1
    m = metrics([[4.0, 3.0, 2.0, 1.0]], [[1, 1, 1, 0]], ks=(2,))
    assert m["Recall@2"][0] == pytest.approx(1.0)
    assert m["NDCG@2"][0] == pytest.approx(1.0)


def tiny_split() -> Split:
    """3 users, 4 items; user 2 has nothing held out for test."""
    empty = np.zeros(0, dtype=np.int64)
    dataset = InteractionDataset("tiny", np.arange(3), np.arange(4), empty, empty, pd.DataFrame(index=range(3)))
    train = np.array([[0, 0], [1, 1], [2, 2]])
    valid = np.array([[0, 1], [1, 0], [2, 3]])
    test = np.array([[0, 2], [1, 3]])
    return Split(dataset, train, valid, test, seed=0)


def fixed_scorer(table):
    scores = torch.tensor(table, dtype=torch.float32)
    return lambda users: scores[users]


def test_evaluate_full_masks_train_and_valid_and_skips_users_without_test_items():
    split = tiny_split()
    # user 0: items 0 (train) and 1 (valid) masked, so the ranking is [2, 3]: test item 2 first
    # user 1: items 1 (train) and 0 (valid) masked, ranking [2, 3]: test item 3 second
    scorer = fixed_scorer([[9, 8, 7, 1], [9, 8, 7, 1], [0, 0, 0, 0]])
    result = evaluate_full(scorer, split, "test", ks=(1, 2))
    assert result.n_users == 2  # user 2 has no test item: left out and counted
    assert result["HR@1"] == pytest.approx(0.5)
    assert result["NDCG@2"] == pytest.approx((1.0 + 1 / L2(3)) / 2)
    assert result.protocol == "full"
    # on validation only training items are masked
    valid = evaluate_full(scorer, split, "valid", ks=(1,))
    assert valid.n_users == 3
    assert valid["HR@1"] == pytest.approx(2 / 3)  # users 0 and 1 get their valid item first (index 1 / 0)


def test_top_k_items_masks_seen_items():
    split = tiny_split()
    top = top_k_items(fixed_scorer([[9, 8, 7, 1], [9, 8, 7, 1], [4, 3, 2, 1]]), split, k=2)
    assert top.tolist() == [[2, 3], [2, 3], [0, 1]]


def test_sampled_protocol_is_pessimistic_about_ties_and_labelled():
    from core.data import make_synthetic, split_per_user

    split = split_per_user(make_synthetic(n_users=120, n_items=200, seed=3), seed=0)
    constant = lambda users: torch.zeros(len(users), split.n_items)  # noqa: E731
    result = evaluate_sampled(constant, split, ks=(10,))
    assert result.protocol == "sampled 1+99"
    assert result["HR@10"] == 0.0  # every negative ties with the positive, and ties count against it
    assert "sampled" in result.to_frame()["protocol"].iloc[0]
    # an oracle that scores the held-out items highest gets everything right
    test = split.matrix("test").toarray()
    oracle = lambda users: torch.tensor(test[users.numpy()], dtype=torch.float32)  # noqa: E731
    assert evaluate_sampled(oracle, split, ks=(1,))["HR@1"] == 1.0


def test_sampled_protocol_never_counts_a_seen_item_as_a_negative():
    """User 1 has seen all items but one, user 0 every item: the draws that stay on seen items (the user's own
    held-out items among them, which the oracle scores as high as the positive) must not count against the
    positive, and a user with nothing unseen is left out rather than counted as a hit."""
    empty = np.zeros(0, dtype=np.int64)
    dataset = InteractionDataset("full", np.arange(2), np.arange(4), empty, empty, pd.DataFrame(index=range(2)))
    train, valid = np.array([[0, 0], [1, 0]]), np.array([[0, 1], [1, 1]])
    test = np.array([[0, 2], [0, 3], [1, 2]])
    split = Split(dataset, train, valid, test, seed=0)
    oracle = evaluate_sampled(fixed_scorer([[0, 0, 1, 1], [0, 0, 1, 0]]), split, ks=(1,))
    assert oracle["HR@1"] == 1.0 and oracle.n_users == 1
    # and a negative that is really unseen still counts: user 1's only unseen item (3) now outscores the positive
    assert evaluate_sampled(fixed_scorer([[0, 0, 1, 1], [0, 0, 1, 2]]), split, ks=(1,))["HR@1"] == 0.0
    constant = lambda users: torch.zeros(len(users), 4)  # noqa: E731
    assert evaluate_sampled(constant, split, ks=(1,))["HR@1"] == 0.0  # user 0 is not a free hit
