"""The before/after comparison shared by the Unlearning page and the benchmark."""
import numpy as np
import pytest

from core.audit import CrossValidation, run_audit
from core.evaluation import evaluate_unlearning, mean_jaccard, tradeoff_sweep
from core.training import TrainConfig, train_model
from core.unlearning.attribute import make_unlearner


def test_mean_jaccard_by_hand():
    before = np.array([[1, 2, 3], [4, 5, 6]])
    after = np.array([[3, 2, 1], [4, 7, 8]])
    # user 0: same set -> 1; user 1: 1 shared of 5 distinct -> 0.2
    assert mean_jaccard(before, after) == pytest.approx(0.6)


def test_lightgcn_is_audited_on_both_representations_and_ranked_with_the_edited_table(demo_split, demo_labels):
    trained = train_model("lightgcn", demo_split, TrainConfig(max_epochs=3, lr=2e-2, batch_size=4096))
    labels = {"gender": demo_labels["gender"]}
    table = trained.model.user_table()
    result = make_unlearner("d2d_r", steps=30, target_gap=0).fit_transform(table, labels, trained.model)
    comparison = evaluate_unlearning(table, [result], labels, trained.model, demo_split, attackers=("logreg",))
    frame = comparison.to_frame()
    assert list(frame["method"]) == ["Original", "D2D-R"]
    assert frame["verdict"][0] == "leaks"  # the demo's gender leaks before unlearning, on some representation
    assert frame["worst |AUC − 0.5|"][0] > frame["worst |AUC − 0.5|"][1]
    reps = set(comparison.rows[0].audits)
    assert len(reps) == 2  # layer 0 and propagated
    for rep in reps:
        assert f"AUC gender Logistic regression [{rep}]" in frame.columns
    original, edited = frame.to_dict("records")
    assert original["NDCG@20"] == pytest.approx(trained.test["NDCG@20"], rel=1e-5)
    assert original["top-20 Jaccard"] == pytest.approx(1.0)
    assert edited["top-20 Jaccard"] < 1.0 and edited["NDCG@20"] != original["NDCG@20"]
    assert edited["runtime s"] == pytest.approx(result.seconds, abs=1e-3)


def test_tradeoff_sweep_weakens_unlearning_as_the_regulariser_grows(demo_bpr, demo_split, demo_labels):
    """A strong regulariser keeps the table near the original, so the attacker's AUC moves less from where it was.
    (Measured as movement, not as the gap to 0.5: at a fixed strength a weak regulariser can carry the table past
    chance to the mirror side, which is a large move and a large gap at once.)"""
    labels = {"gender": demo_labels["gender"]}
    table = demo_bpr.model.user_table()
    before = run_audit(table, labels, attackers=("logreg",), protocol=CrossValidation(n_repeats=1),
                       n_permutations=0).auc("gender", "logreg")
    frame = tradeoff_sweep("d2d_r", [0.1, 100.0], table, labels, demo_bpr.model, demo_split,
                           attackers=("logreg",), params={"steps": 40})
    low_alpha, high_alpha = frame.sort_values("weight")["AUC"].tolist()
    assert abs(low_alpha - before) > abs(high_alpha - before) + 0.1
    ndcg = frame.sort_values("weight")["NDCG@20"].tolist()
    assert ndcg[1] > ndcg[0]
    with pytest.raises(ValueError, match="no trade-off weight"):
        tradeoff_sweep("leace", [1.0], demo_bpr.model.user_table(), labels)
