"""Attribute unlearning (SPEC section 5): the maths checked against dense references, the methods against the
issue's targets on MovieLens-100K, and every registered method end to end on the demo."""
import time

import numpy as np
import pandas as pd
import pytest
import torch

from core.attacks import CrossValidation, ShadowSplit, run_audit
from core.attribute_unlearning import (
    UNLEARNERS,
    clear_calibration_cache,
    group_codes,
    group_mmd,
    hyperparameters,
    kernel_sum,
    leace_eraser,
    make_unlearner,
    multi_kernel_mmd,
    total_variance,
    u2u_pair_term,
)
from core.data import encode_attribute
from core.metrics import evaluate_full


def random_groups(n=120, d=6, n_classes=2, seed=0, unlabelled=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=generator, dtype=dtype)
    codes = torch.randint(0, n_classes, (n,), generator=generator)
    onehot = torch.nn.functional.one_hot(codes, n_classes).to(dtype)
    onehot[:unlabelled] = 0
    return x, onehot, codes


# ------------------------------------------------------------------------------------------- maths vs references


def test_group_mmd_equals_the_textbook_biased_estimator():
    x, onehot, codes = random_groups()
    kernel = kernel_sum(x)
    a, b = codes == 0, codes == 1
    textbook = kernel[a][:, a].mean() + kernel[b][:, b].mean() - 2 * kernel[a][:, b].mean()
    assert float(group_mmd(kernel, onehot)) == pytest.approx(float(textbook), rel=1e-10)
    # σ0 is the mean pairwise squared distance, so the widest kernel at the mean distance is exp(-1/4)
    assert float(kernel.diagonal().mean()) == pytest.approx(5.0)


def test_multiclass_mmd_is_the_size_weighted_one_vs_rest_mean():
    x, onehot, codes = random_groups(n_classes=3, seed=1)
    kernel = kernel_sum(x)
    parts, sizes = [], []
    for c in range(3):
        g, r = codes == c, codes != c
        parts.append(kernel[g][:, g].mean() + kernel[r][:, r].mean() - 2 * kernel[g][:, r].mean())
        sizes.append(float(g.sum()))
    expected = sum(p * s for p, s in zip(parts, sizes)) / sum(sizes)
    assert float(group_mmd(kernel, onehot)) == pytest.approx(float(expected), rel=1e-10)


@pytest.mark.parametrize("null_corrected", [False, True])
def test_fused_mmd_matches_autograd_value_and_gradient(null_corrected):
    x, binary, _ = random_groups(n=150, unlabelled=10)
    _, multi, _ = random_groups(n=150, n_classes=4, seed=3, unlabelled=25)
    x.requires_grad_(True)
    reference = group_mmd(kernel_sum(x), binary, null_corrected) + group_mmd(kernel_sum(x), multi, null_corrected)
    (expected,) = torch.autograd.grad(reference, x)
    fused = multi_kernel_mmd(x, [binary, multi], null_corrected)
    (gradient,) = torch.autograd.grad(fused, x)
    assert float(fused.detach()) == pytest.approx(float(reference), rel=1e-10)
    assert torch.allclose(gradient, expected, rtol=1e-8, atol=1e-12)
    assert float(expected.abs().max()) > 0


def test_null_corrected_mmd_is_zero_for_random_groups_and_positive_for_shifted_ones():
    x, onehot, codes = random_groups(n=600, d=4, seed=5)
    assert float(group_mmd(kernel_sum(x), onehot, null_corrected=False)) > 0  # the biased estimator's floor
    assert float(group_mmd(kernel_sum(x), onehot, null_corrected=True)) == 0.0
    shifted = x + 1.0 * codes[:, None].to(x.dtype)
    assert float(group_mmd(kernel_sum(shifted), onehot, null_corrected=True)) > 0.01


def test_u2u_pair_term_equals_the_dense_pair_sum():
    x, onehot, codes = random_groups(n=40, n_classes=3, unlabelled=5)
    labelled = onehot.sum(1) > 0
    total, pairs = 0.0, 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            if labelled[i] and labelled[j] and codes[i] != codes[j]:
                total += float((x[i] - x[j]).pow(2).sum())
                pairs += 1
    assert float(u2u_pair_term(x, onehot)) == pytest.approx(total / pairs, rel=1e-10)


def test_u2u_closed_form_equals_the_gradient_optimum():
    x, onehot, codes = random_groups(n=60, d=4, n_classes=3, seed=2, unlabelled=6)
    x = x.float()
    labels = {"g": encode_attribute(pd.Series(np.where(onehot.sum(1) > 0, codes.numpy().astype(str), None)), "g")}
    closed = make_unlearner("u2u_r_closed", alpha=0.5).fit_transform(x, labels).table
    gradient = make_unlearner("u2u_r", alpha=0.5, steps=3000, lr=0.05).fit_transform(x, labels).table
    assert torch.allclose(closed, gradient, atol=2e-3), float((closed - gradient).abs().max())
    # and the closed form is stationary for the objective U2UR minimises
    table = closed.double().requires_grad_(True)
    onehot32 = group_codes(labels, len(x), torch.device("cpu"))[0].onehot.double()
    scale = total_variance(x.double())
    objective = u2u_pair_term(table, onehot32) / scale + 0.5 * (table - x.double()).pow(2).sum(1).mean() / scale
    (gradient_at_optimum,) = torch.autograd.grad(objective, table)
    assert float(gradient_at_optimum.abs().max()) < 1e-6
    assert torch.equal(closed[:6], x[:6])  # unlabelled users keep θ*


def test_leace_equalises_class_means_for_several_attributes_at_once():
    x, first, _ = random_groups(n=400, d=8, seed=7, dtype=torch.float32)
    _, second, _ = random_groups(n=400, d=8, n_classes=3, seed=8, dtype=torch.float32)
    x = x + 2 * first[:, :1] - 1.5 * second[:, 1:2]
    eraser, mean = leace_eraser(x, torch.cat([first, second], 1))
    erased = x - (x - mean) @ eraser.T
    for onehot in (first, second):
        means = (onehot.T @ erased) / onehot.sum(0)[:, None]
        assert float((means - means.mean(0)).abs().max()) < 1e-4
        before = (onehot.T @ x) / onehot.sum(0)[:, None]
        assert float((before - before.mean(0)).abs().max()) > 0.5


# ------------------------------------------------------------------------------------------- registry and inputs


def test_every_method_has_documented_defaults_and_builds_from_them():
    for name, cls in UNLEARNERS.items():
        assert cls.label and cls.description
        for parameter in hyperparameters(name):
            assert parameter.help, f"{name}.{parameter.name} has no help text"
        method = make_unlearner(name)
        if cls.tradeoff_field:
            assert hasattr(method, cls.tradeoff_field)
    with pytest.raises(ValueError, match="unknown method"):
        make_unlearner("nope")


def test_inputs_are_checked(demo_bpr, demo_labels):
    table = demo_bpr.model.user_table()
    with pytest.raises(ValueError, match="one attribute at a time"):
        make_unlearner("u2u_r_closed").fit_transform(table, demo_labels)
    with pytest.raises(ValueError, match="needs the recommender"):
        make_unlearner("int_retrain").fit_transform(table, {"gender": demo_labels["gender"]})
    with pytest.raises(ValueError, match="at least one attribute"):
        make_unlearner("d2d_r").fit_transform(table, {})
    with pytest.raises(ValueError, match="function-space regulariser needs the model"):
        make_unlearner("d2d_r", regularizer="function").fit_transform(table, {"gender": demo_labels["gender"]})


def test_same_seed_same_table(demo_bpr, demo_labels):
    table = demo_bpr.model.user_table()
    labels = {"gender": demo_labels["gender"]}
    first = make_unlearner("d2d_r", steps=20).fit_transform(table, labels).table
    second = make_unlearner("d2d_r", steps=20).fit_transform(table, labels).table
    assert torch.equal(first, second)
    assert not torch.equal(first, table)


# ------------------------------------------------------------------------------------------- the targets


def _gaps(table, labels, protocol):
    audit = run_audit(table, labels, attackers=("mlp", "xgboost"), protocol=protocol, n_permutations=0)
    return {(s.attribute, s.attacker): s.auc for s in audit.scores}


def test_d2d_r_forgets_gender_on_movielens_and_keeps_ranking(ml100k_bpr, ml100k_labels, ml100k_split):
    model, labels = ml100k_bpr.model, {"gender": ml100k_labels["gender"]}
    table = model.user_table()
    result = make_unlearner("d2d_r").fit_transform(table, labels, model)
    before = _gaps(table, labels, CrossValidation())
    assert before[("gender", "mlp")] > 0.6  # there was something to forget
    for protocol in (CrossValidation(), ShadowSplit()):
        for key, auc in _gaps(result.table, labels, protocol).items():
            assert abs(auc - 0.5) <= 0.05, (protocol.label, key, auc)
    original = evaluate_full(model.scorer(table), ml100k_split, "test", ks=(20,))["NDCG@20"]
    edited = evaluate_full(model.scorer(result.table), ml100k_split, "test", ks=(20,))["NDCG@20"]
    assert edited >= 0.99 * original
    assert len(result.loss_history) == 100 and np.isfinite(result.loss_history).all()


def test_biased_mmd_over_corrects_where_the_null_corrected_one_does_not(ml100k_bpr, ml100k_labels):
    """The paper's plain MMD² with a weak regulariser pushes the groups past 'as alike as chance': the CV attacker
    then reads the mirror (AUC far below 0.5). The null-corrected default stops at chance."""
    table, labels = ml100k_bpr.model.user_table(), {"gender": ml100k_labels["gender"]}
    biased = make_unlearner("d2d_r", alpha=0.5, estimator="biased").fit_transform(table, labels).table
    corrected = make_unlearner("d2d_r", alpha=0.5).fit_transform(table, labels).table
    assert _gaps(biased, labels, CrossValidation())[("gender", "mlp")] < 0.4
    assert abs(_gaps(corrected, labels, CrossValidation())[("gender", "mlp")] - 0.5) <= 0.05


def test_u2u_r_collapses_groups_and_xgboost_finds_them(ml100k_bpr, ml100k_labels):
    """The paper's instructive failure: U2U-R pulls each group onto a needle that a tree model separates."""
    table, labels = ml100k_bpr.model.user_table(), {"gender": ml100k_labels["gender"]}
    start = time.perf_counter()
    result = make_unlearner("u2u_r_closed").fit_transform(table, labels)
    assert time.perf_counter() - start < 5  # generous: the bench records the real figure (milliseconds)
    before, after = _gaps(table, labels, CrossValidation()), _gaps(result.table, labels, CrossValidation())
    assert after[("gender", "xgboost")] > max(0.9, before[("gender", "xgboost")])


def test_lego_style_forgets_three_attributes_and_reuses_its_calibrations(ml100k_bpr, ml100k_labels, ml100k_split,
                                                                         ml100k):
    clear_calibration_cache()
    model = ml100k_bpr.model
    table = model.user_table()
    method = make_unlearner("lego")
    result = method.fit_transform(table, ml100k_labels, model)
    assert result.details["new_calibrations"] == 3 and result.details["reused_calibrations"] == 0
    for key, auc in _gaps(result.table, ml100k_labels, CrossValidation()).items():
        assert abs(auc - 0.5) <= 0.06, (key, auc)
    original = evaluate_full(model.scorer(table), ml100k_split, "test", ks=(20,))["NDCG@20"]
    edited = evaluate_full(model.scorer(result.table), ml100k_split, "test", ks=(20,))["NDCG@20"]
    assert edited >= 0.97 * original
    # a dynamic request: drop occupation, then add an activity level; only the new attribute is calibrated
    dropped = method.fit_transform(table, {k: ml100k_labels[k] for k in ("gender", "age")}, model)
    assert dropped.details["new_calibrations"] == 0 and dropped.details["reused_calibrations"] == 2
    activity = np.bincount(ml100k_split.train[:, 0], minlength=ml100k_split.n_users)
    four = {**ml100k_labels, "activity": encode_attribute(pd.Series(activity), "activity")}
    added = method.fit_transform(table, four, model)
    assert added.details["new_calibrations"] == 1 and added.details["reused_calibrations"] == 3
    assert not torch.equal(added.table, result.table)


# ------------------------------------------------------------------------------------------- every method runs


@pytest.mark.parametrize("name", ["d2d_r", "u2u_r", "leace", "lego", "joint_d2d", "sequential_d2d"])
def test_post_training_methods_reduce_linear_leakage_on_the_demo(name, demo_bpr, demo_labels):
    labels = {"gender": demo_labels["gender"]} if name in ("d2d_r", "u2u_r") else demo_labels
    table = demo_bpr.model.user_table()
    result = make_unlearner(name).fit_transform(table, labels, demo_bpr.model)
    assert result.table.shape == table.shape and torch.isfinite(result.table).all()
    assert result.seconds > 0 and result.attributes == tuple(labels)
    before = run_audit(table, labels, attackers=("logreg",), n_permutations=0)
    after = run_audit(result.table, labels, attackers=("logreg",), n_permutations=0)
    # gender is targeted by every method; U2U-R's default only pulls the groups part of the way together
    required = 0.1 if name == "u2u_r" else 0.15
    assert abs(after.auc("gender", "logreg") - 0.5) < abs(before.auc("gender", "logreg") - 0.5) - required


def test_function_space_regulariser_keeps_more_of_the_ranking(demo_bpr, demo_labels, demo_split):
    model, labels = demo_bpr.model, {"gender": demo_labels["gender"]}
    table = model.user_table()
    result = make_unlearner("d2d_r", regularizer="function", alpha=1.0).fit_transform(table, labels, model)
    assert torch.isfinite(result.table).all()
    after = run_audit(result.table, labels, attackers=("logreg",), n_permutations=0).auc("gender", "logreg")
    before = run_audit(table, labels, attackers=("logreg",), n_permutations=0).auc("gender", "logreg")
    assert after < before - 0.1


def test_target_driven_mode_reports_what_it_reached(demo_bpr, demo_labels):
    labels = {"gender": demo_labels["gender"]}
    result = make_unlearner("d2d_r", alpha=10.0, steps=300, target_gap=0.05).fit_transform(
        demo_bpr.model.user_table(), labels)
    assert "probe AUC − 0.5" in result.notes
    if result.notes.startswith("target reached"):
        assert "α = " in result.notes and "α = 10" not in result.notes  # it had to weaken the regulariser


def test_mini_batches_bound_memory_for_a_large_population():
    """100,000 users: the kernel is only ever built on `batch_users` of them; each step is a pass in batches."""
    generator = torch.Generator().manual_seed(0)
    n, d = 100_000, 32
    codes = torch.randint(0, 2, (n,), generator=generator)
    table = torch.randn(n, d, generator=generator)
    table[:, 0] += 1.5 * codes
    labels = {"g": encode_attribute(pd.Series(codes.numpy()), "g")}
    result = make_unlearner("d2d_r", steps=3, batch_users=2048).fit_transform(table, labels)
    gap_before = float(table[codes == 1, 0].mean() - table[codes == 0, 0].mean())
    gap_after = float(result.table[codes == 1, 0].mean() - result.table[codes == 0, 0].mean())
    assert gap_after < 0.3 * gap_before
    assert len(result.loss_history) == 3  # one mean loss per pass (of 49 batches)


@pytest.mark.parametrize("name", ["int_retrain", "adv_int"])
def test_in_training_baselines_retrain_end_to_end_on_the_demo(name, demo_bpr, demo_labels, demo_split):
    labels = {"gender": demo_labels["gender"]}
    result = make_unlearner(name, max_epochs=12).fit_transform(demo_bpr.model.user_table(), labels, demo_bpr.model,
                                                               demo_split)
    assert result.model is not None and result.model is not demo_bpr.model
    assert torch.equal(result.table, result.model.user_table())
    assert len(result.loss_history) >= 1 and np.isfinite(result.loss_history).all()
    quality = evaluate_full(result.model.scorer(), demo_split, "test", ks=(20,))["NDCG@20"]
    assert quality > 0.02  # a trained recommender, not noise (random ranking is ~0.01 on the demo)
    if name == "int_retrain":
        after = run_audit(result.table, labels, attackers=("mlp",), n_permutations=0).auc("gender", "mlp")
        assert abs(after - 0.5) < 0.1


@pytest.fixture(scope="module")
def demo_lightgcn(demo_split):
    from core.training import TrainConfig, train_model

    return train_model("lightgcn", demo_split, TrainConfig(max_epochs=4, lr=2e-2, batch_size=4096)).model


@pytest.mark.parametrize("name", ["d2d_r", "lego"])
def test_lightgcn_unlearning_also_cleans_the_propagated_embeddings(name, demo_lightgcn, demo_labels):
    """Editing layer 0 alone leaves the attribute in the propagated embeddings (items carry it back in); the
    default also matches the groups there, which is what serving uses."""
    model = demo_lightgcn
    labels = {"gender": demo_labels["gender"]}
    table = model.user_table()

    def propagated_gap(method):
        edited = method.fit_transform(table, labels, model).table
        propagated = model.representations(edited)["propagated"]
        return abs(run_audit(propagated, labels, attackers=("logreg",), n_permutations=0).auc("gender", "logreg") - 0.5)

    layer0_only = propagated_gap(make_unlearner(name, representations="table"))
    both = propagated_gap(make_unlearner(name))
    assert both < layer0_only - 0.05
