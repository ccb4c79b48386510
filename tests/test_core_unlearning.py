"""Attribute unlearning (SPEC section 5): the maths checked against dense references, the target-driven search
against the issue's targets (MovieLens-100K, the demo, synthetic populations), and every registered method."""
import numpy as np
import pandas as pd
import pytest
import torch

from conftest import on
from core.audit import CrossValidation, make_folds, run_audit
from core.data import encode_attribute
from core.metrics import evaluate_full
from core.models import served_representations
from core.populations import planted_attributes, planted_population
from core.unlearning.attribute import UNLEARNERS, CalibrationCache, hyperparameters, make_unlearner
from core.unlearning.attribute.base import group_codes, ranking_hinge, total_variance
from core.unlearning.attribute.d2d import _RowAdam
from core.unlearning.attribute.in_training import AdvInT
from core.unlearning.attribute.linear import leace_eraser
from core.unlearning.attribute.mmd import group_mmd, kernel_sum, multi_kernel_mmd
from core.unlearning.attribute.moments import match_groups, moment_match, random_group_moments
from core.unlearning.attribute.u2u import u2u_pair_term


def random_groups(n=120, d=6, n_classes=2, seed=0, unlabelled=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=generator, dtype=dtype)
    codes = torch.randint(0, n_classes, (n,), generator=generator)
    onehot = torch.nn.functional.one_hot(codes, n_classes).to(dtype)
    onehot[:unlabelled] = 0
    return x, onehot, codes


def worst_gap(table, labels, model=None, attackers=("mlp", "xgboost", "logreg"), protocol=CrossValidation(),
              device="cpu"):
    """The largest |AUC − 0.5| over the attackers, attributes and every served representation (the verdict's)."""
    reps = served_representations(model, torch.as_tensor(table).to(model.device) if model is not None else table)
    worst = 0.0
    for name, values in reps.items():
        audit = run_audit(values, labels, attackers=attackers, protocol=protocol, n_permutations=0, device=device)
        worst = max([worst] + [abs(s.auc - 0.5) for s in audit.scores])
    return worst


# ------------------------------------------------------------------------------------------- maths vs references


def test_group_mmd_equals_the_textbook_biased_estimator():
    x, onehot, codes = random_groups()
    kernel = kernel_sum(x)
    a, b = codes == 0, codes == 1
    textbook = kernel[a][:, a].mean() + kernel[b][:, b].mean() - 2 * kernel[a][:, b].mean()
    assert float(group_mmd(kernel, onehot)) == pytest.approx(float(textbook), rel=1e-10)
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
def test_fused_mmd_matches_autograd_value_and_gradient(null_corrected, device):
    x, binary, _ = random_groups(n=150, unlabelled=10)
    _, multi, _ = random_groups(n=150, n_classes=4, seed=3, unlabelled=25)
    x, binary, multi = x.to(device).requires_grad_(True), binary.to(device), multi.to(device)
    reference = group_mmd(kernel_sum(x), binary, null_corrected) + group_mmd(kernel_sum(x), multi, null_corrected)
    (expected,) = torch.autograd.grad(reference, x)
    fused = multi_kernel_mmd(x, [binary, multi], null_corrected)
    (gradient,) = torch.autograd.grad(fused, x)
    assert float(fused.detach()) == pytest.approx(float(reference), rel=1e-8)
    assert torch.allclose(gradient, expected, rtol=1e-6, atol=1e-10)
    assert float(expected.abs().max()) > 0


def test_null_corrected_mmd_is_zero_for_random_groups_and_positive_for_shifted_ones():
    x, onehot, codes = random_groups(n=600, d=4, seed=5)
    assert float(group_mmd(kernel_sum(x), onehot, null_corrected=False)) > 0
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
    labels = {"g": encode_attribute(pd.Series(np.where(onehot.sum(1) > 0, codes.numpy().astype(str), None)), "g",
                                    min_class_size=2)}
    closed = make_unlearner("u2u_r_closed", alpha=0.5, target_gap=0).fit_transform(x, labels).table
    gradient = make_unlearner("u2u_r", alpha=0.5, steps=3000, lr=0.05).fit_transform(x, labels).table
    assert torch.allclose(closed, gradient, atol=2e-3), float((closed - gradient).abs().max())
    table = closed.double().requires_grad_(True)
    onehot32 = group_codes(labels, len(x), torch.device("cpu"))[0].onehot.double()
    scale = total_variance(x.double())
    objective = u2u_pair_term(table, onehot32) / scale + 0.5 * (table - x.double()).pow(2).sum(1).mean() / scale
    (gradient_at_optimum,) = torch.autograd.grad(objective, table)
    assert float(gradient_at_optimum.abs().max()) < 1e-6
    assert torch.equal(closed[:6], x[:6])


def test_moment_matching_gives_each_group_its_target_mean_and_covariance():
    x, onehot, codes = random_groups(n=3000, d=5, n_classes=3, seed=4)
    x = x + torch.tensor([0.0, 1.0, -1.0], dtype=x.dtype)[codes][:, None] * torch.linspace(0.5, 1.5, 5, dtype=x.dtype)
    x[codes == 1] *= 1.8  # a variance difference too
    generator = torch.Generator().manual_seed(0)
    targets = random_group_moments(x, codes, 3, generator)
    matched = match_groups(x, codes, targets)
    for g, (mean, cov) in enumerate(targets):
        rows = matched[codes == g]
        assert torch.allclose(rows.mean(0), mean, atol=1e-9)
        assert torch.allclose(torch.cov(rows.T), cov, atol=1e-9)
    # the targets are random groups' moments: close to the pooled ones, not to the group's own
    pooled = x.mean(0)
    assert float((targets[1][0] - pooled).abs().max()) < 0.15 < float((x[codes == 1].mean(0) - pooled).abs().max())


def test_random_group_targets_have_a_relabellings_centre_and_spread():
    """The targets are drawn from a Gaussian surrogate (no user's own values in them) yet behave like a shuffle of the
    labels: their size-weighted mean is the labelled mean, and the difference between two groups' target means
    spreads as Σ(1/n_A + 1/n_B), the chance level a random labelling shows."""
    x, _, codes = random_groups(n=400, d=3, n_classes=2, seed=2)
    x = x * torch.tensor([1.0, 2.0, 0.5], dtype=x.dtype)
    sizes = torch.bincount(codes).double()
    generator = torch.Generator().manual_seed(0)
    gaps = []
    for _ in range(1500):
        (mean_a, _), (mean_b, _) = random_group_moments(x, codes, 2, generator)
        assert torch.allclose((sizes[0] * mean_a + sizes[1] * mean_b) / sizes.sum(), x.mean(0), atol=1e-9)
        gaps.append(mean_a - mean_b)
    observed = torch.stack(gaps).var(0)
    expected = torch.cov(x.T).diagonal() * (1 / sizes[0] + 1 / sizes[1])
    assert torch.allclose(observed, expected, rtol=0.15)  # the variance of 1,500 draws is within ~4% (1 s.e.)


def test_random_group_targets_leave_no_mirror_where_exact_equality_does():
    """Matching every group exactly onto the pooled moments mirrors under cross-validation (a linear attacker reads
    AUC far below 0.5); matching onto a random group's moments leaves the attackers at chance, both sides."""
    table, labels = planted_population(6000, dim=16, strength=1.0, seed=3)
    x = torch.as_tensor(table)
    codes = torch.as_tensor(labels.codes)
    assert worst_gap(x, {"planted": labels}, attackers=("logreg",)) > 0.1
    chance = moment_match(x, [(codes, 2)], seed=0)
    assert worst_gap(chance, {"planted": labels}) <= 0.03
    pooled_targets = [(x.double().mean(0), torch.cov(x.double().T))] * 2
    exact = match_groups(x, codes, pooled_targets)
    audit = run_audit(exact, {"planted": labels}, attackers=("logreg",), n_permutations=0)
    assert audit.auc("planted", "logreg") < 0.45


def test_row_adam_moves_only_the_batch_and_matches_adam_on_a_full_batch():
    generator = torch.Generator().manual_seed(0)
    table = torch.randn(50, 4, generator=generator)
    reference = table.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([reference], lr=0.1)
    rows_adam = _RowAdam(table, lr=0.1)
    for step in range(3):
        gradient = torch.randn(50, 4, generator=generator)
        reference.grad = gradient.clone()
        optimizer.step()
        rows_adam.step(torch.arange(50), gradient)
    assert torch.allclose(table, reference.detach(), atol=1e-5)
    before = table.clone()
    rows_adam.step(torch.tensor([3, 7]), torch.ones(2, 4))
    moved = (table != before).any(1)
    assert moved[[3, 7]].all() and not moved[[i for i in range(50) if i not in (3, 7)]].any()


@pytest.mark.parametrize("batch_users", [4096, 256])  # one dense Adam; per-row Adam over mini-batches
def test_a_refinement_in_chunks_goes_on_where_the_last_chunk_stopped(batch_users):
    """The target-driven refinement probes between chunks of passes; with the caller's holder each chunk goes on
    with the same Adam state and mini-batch stream, so two chunks of 5 passes are one run of 10. Without it every
    chunk starts Adam afresh (its first steps sign-like: each coordinate moved by the full step) and the path
    differs."""
    from core.unlearning.attribute.d2d import d2d_optimise

    table, labels = planted_population(600, dim=8, strength=1.0, seed=0, signals=("mean",))
    original = torch.as_tensor(table)
    groups = group_codes({"planted": labels}, len(original), torch.device("cpu"))
    config = make_unlearner("d2d_r", batch_users=batch_users, target_gap=0.0)
    whole, _ = d2d_optimise(original, original, groups, config, None, None, steps=10)
    holder = []
    half, _ = d2d_optimise(original, original, groups, config, None, None, steps=5, descent=holder)
    assert len(holder) == 1
    chunked, _ = d2d_optimise(original, half, groups, config, None, None, steps=5, descent=holder)
    assert torch.allclose(chunked, whole, atol=1e-6)
    restarted, _ = d2d_optimise(original, half, groups, config, None, None, steps=5)
    assert not torch.allclose(restarted, whole, atol=1e-3)
    # a start the holder's descent did not leave begins a new descent in it
    other, _ = d2d_optimise(original, original + 0.1, groups, config, None, None, steps=1, descent=holder)
    assert torch.equal(holder[0].table.detach(), other)


@pytest.mark.parametrize("derived", [False, True])
def test_the_search_keeps_one_descent_across_its_chunks_except_on_derived_views(monkeypatch, derived):
    """Every chunk of one refinement gets the same holder (so the descent goes on), unless the MMD also matches a
    view derived from the table (LightGCN's propagation), where each chunk restarts Adam."""
    from core.unlearning.attribute import d2d, target

    table, labels = planted_population(300, dim=8, strength=1.0, seed=0, signals=("mean",))
    original = torch.as_tensor(table)
    holders = []
    monkeypatch.setattr(target, "measure_leakage", lambda *a, **k: target.Leakage({("user", "planted"): 0.2}, "cv"))
    monkeypatch.setattr(d2d, "uses_derived", lambda *a: derived)
    monkeypatch.setattr(d2d, "d2d_optimise", lambda original_, start, *a, steps=1, descent=None, **k: (
        holders.append(descent) or start + 0.01, [0.0] * steps))
    groups = group_codes({"planted": labels}, len(original), torch.device("cpu"))
    config = make_unlearner("d2d_r", steps=60, closed_form="off", tries=1)
    d2d.target_driven(config, original, groups, {"planted": labels}, None, None, torch.device("cpu"))
    assert len(holders) == 3
    if derived:
        assert all(h is None for h in holders)
    else:
        assert isinstance(holders[0], list) and all(h is holders[0] for h in holders)


def test_leace_equalises_class_means_and_matches_the_concept_erasure_oracle():
    from concept_erasure import LeaceEraser

    x, first, _ = random_groups(n=400, d=8, seed=7, dtype=torch.float32)
    _, second, _ = random_groups(n=400, d=8, n_classes=3, seed=8, dtype=torch.float32)
    x = x + 2 * first[:, :1] - 1.5 * second[:, 1:2]
    indicators = torch.cat([first, second], 1)
    eraser, mean = leace_eraser(x, indicators)
    erased = x - (x - mean) @ eraser.T
    for onehot in (first, second):
        means = (onehot.T @ erased) / onehot.sum(0)[:, None]
        assert float((means - means.mean(0)).abs().max()) < 1e-4
    oracle = LeaceEraser.fit(x.double(), indicators.double(), shrinkage=False)(x.double()).float()
    assert torch.allclose(erased, oracle, atol=1e-4), float((erased - oracle).abs().max())


def test_ranking_hinge_is_zero_when_the_order_is_kept_and_positive_when_reversed(demo_bpr):
    model = demo_bpr.model
    table = model.user_table()
    users = torch.arange(50)
    top = model.scorer(table)(torch.arange(len(table))).topk(20, dim=1).indices
    margin = torch.tensor(0.0)
    assert float(ranking_hinge(model, table, users, top, margin)) == 0.0
    assert float(ranking_hinge(model, table, users, top.flip(1), margin)) > 0.0


def test_adv_int_adversary_learns_from_its_loss(demo_bpr, demo_labels):
    """The adversary must get a gradient from the hook's loss (a zero loss would leave it untrained)."""
    model = demo_bpr.model
    groups = group_codes({"gender": demo_labels["gender"]}, len(model.user_table()), torch.device("cpu"))
    for objective in ("reversal", "confusion"):
        hook, extra = AdvInT(objective=objective)._hook(groups, model.user_table().shape[1], torch.device("cpu"), 1e-3)
        loss = hook(model, torch.arange(200))
        loss.backward()
        adversary_parameters = extra[0]["params"]
        assert all(p.grad is not None and float(p.grad.abs().max()) > 0 for p in adversary_parameters), objective
        model.zero_grad()


# ------------------------------------------------------------------------------------------- registry and inputs


def test_every_method_has_documented_defaults_and_builds_from_them():
    for name, cls in UNLEARNERS.items():
        assert cls.label and cls.description
        for parameter in hyperparameters(name):
            assert parameter.help, f"{name}.{parameter.name} has no help text"
        method = make_unlearner(name)
        if cls.tradeoff_field:
            assert hasattr(method, cls.tradeoff_field)
    for name in ("d2d_r", "lego", "joint_d2d", "sequential_d2d", "u2u_r_closed"):
        assert make_unlearner(name).target_gap == 0.05  # aimed at the audit's tolerance by default
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
        make_unlearner("d2d_r", regularizer="function", target_gap=0).fit_transform(
            table, {"gender": demo_labels["gender"]})


def test_same_seed_same_table(demo_bpr, demo_labels, device):
    table = demo_bpr.model.user_table()
    labels = {"gender": demo_labels["gender"]}
    first = make_unlearner("d2d_r", steps=20, target_gap=0).fit_transform(table, labels, device=device).table
    second = make_unlearner("d2d_r", steps=20, target_gap=0).fit_transform(table, labels, device=device).table
    assert torch.equal(first, second)
    assert not torch.equal(first, table)


def test_a_target_driven_search_gives_the_same_table_however_slow_the_machine(monkeypatch):
    """No time cap by default: a clock that jumps 1,000 s at every reading (a machine a thousand times busier) leaves
    the search, its table and its verdict as they were. A cap set by the user is honoured and said: it stops the
    search, and the result says the time cap ran out."""
    from core.unlearning.attribute import d2d

    table, labels = planted_population(600, dim=8, strength=1.5, seed=3, signals=("mean",))
    original, labels = torch.as_tensor(table), {"planted": labels}
    calm = make_unlearner("d2d_r", tries=1, steps=20).fit_transform(original, labels)

    class Busy:
        """A clock that moves 1,000 s between two readings."""
        now = 0.0

        @classmethod
        def perf_counter(cls) -> float:
            cls.now += 1000.0
            return cls.now

    monkeypatch.setattr(d2d, "time", Busy)
    busy = make_unlearner("d2d_r", tries=1, steps=20).fit_transform(original, labels)
    assert busy.details["reached"] and calm.details["reached"] and not busy.details["time_capped"]
    assert torch.equal(busy.table, calm.table) and busy.details["after"] == calm.details["after"]
    capped = make_unlearner("d2d_r", tries=1, steps=20, max_seconds=900).fit_transform(original, labels)
    assert capped.details["time_capped"] and not capped.details["reached"]
    assert any("the time cap ran out (max_seconds = 900" in line for line in capped.details["log"])
    assert "The time cap ran out" in capped.notes and "time cap" not in busy.notes


# ------------------------------------------------------------------------------------------- the targets


def test_d2d_r_meets_the_target_on_movielens_and_keeps_ranking(ml100k_bpr, ml100k_labels, ml100k_split):
    model, labels = ml100k_bpr.model, {"gender": ml100k_labels["gender"]}
    table = model.user_table()
    assert worst_gap(table, labels) > 0.15  # there was something to forget
    result = make_unlearner("d2d_r").fit_transform(table, labels, model)
    assert result.details["reached"], result.details["log"]
    assert worst_gap(result.table, labels) <= 0.05  # every default attacker, an independent audit
    original = evaluate_full(model.scorer(table), ml100k_split, "test", ks=(20,))["NDCG@20"]
    edited = evaluate_full(model.scorer(result.table), ml100k_split, "test", ks=(20,))["NDCG@20"]
    assert edited >= 0.97 * original


def test_linear_eraser_leaves_no_mirror_for_a_cross_validated_linear_attacker(ml100k_bpr, ml100k_labels):
    table, labels = ml100k_bpr.model.user_table(), {"gender": ml100k_labels["gender"]}
    exact = make_unlearner("leace", chance_level=False).fit_transform(table, labels).table
    chance = make_unlearner("leace").fit_transform(table, labels).table
    mirrored = run_audit(exact, labels, attackers=("logreg",), n_permutations=0).auc("gender", "logreg")
    assert mirrored < 0.42  # the exact in-sample erasure: held-out users read reversed
    after = run_audit(chance, labels, attackers=("logreg",), n_permutations=0).auc("gender", "logreg")
    assert abs(after - 0.5) <= 0.05


def test_u2u_r_collapses_groups_and_xgboost_finds_them(ml100k_bpr, ml100k_labels):
    """The paper's instructive failure: U2U-R pulls each group onto a needle that a tree model separates."""
    table, labels = ml100k_bpr.model.user_table(), {"gender": ml100k_labels["gender"]}
    result = make_unlearner("u2u_r_closed", target_gap=0).fit_transform(table, labels)
    after = run_audit(result.table, labels, attackers=("xgboost",), n_permutations=0).auc("gender", "xgboost")
    assert after > 0.9


def test_d2d_r_reaches_the_target_on_a_large_uploaded_population():
    """100,000 users × 64 with a planted mean shift and no model: the closed-form stage reaches the target, the
    probe and the audit attack stratified samples, and nothing of size N² is ever built. (The benchmark runs the
    harder populations, with variance and cluster signals, at up to a million users.)"""
    table, labels = planted_population(100_000, dim=64, strength=2.2, seed=1, signals=("mean",))
    before = worst_gap(table[:20000], {"planted": encode_attribute(pd.Series(labels.codes[:20000]), "planted")},
                       protocol=CrossValidation(n_repeats=1))
    assert before > 0.15
    result = make_unlearner("d2d_r").fit_transform(torch.as_tensor(table), {"planted": labels})
    assert result.details["reached"], result.details["log"]
    audit = run_audit(result.table, {"planted": labels}, n_permutations=0, protocol=CrossValidation(n_repeats=1),
                      max_users=50_000)
    assert all(abs(s.auc - 0.5) <= 0.05 for s in audit.scores)
    assert any("stratified sample of 50,000" in note for note in audit.notes)


def test_lego_style_takes_three_planted_attributes_within_the_target_on_a_large_uploaded_table():
    """200,000 users × 64 with three attributes planted at once (binary, ordinal, categorical; AUC 0.74-0.80 for a
    linear attacker) and no model: LEGO-style's cached calibrations and fitted combination, at fixed strength (no
    search), leave each within the target on a held-out sample, for a linear attacker."""
    table, labels = planted_attributes(200_000, strength=2.2, seed=3)
    sample = np.random.default_rng(0).choice(200_000, 20_000, replace=False)

    def linear_gaps(values):
        part = {name: encode_attribute(pd.Series(np.asarray(a.classes)[a.codes[sample]]), name, kind=a.kind)
                for name, a in labels.items()}
        audit = run_audit(values[sample], part, attackers=("logreg",), protocol=CrossValidation(n_repeats=1),
                          n_permutations=0)
        return {s.attribute: abs(s.auc - 0.5) for s in audit.scores}

    assert min(linear_gaps(torch.as_tensor(table)).values()) > 0.2
    result = make_unlearner("lego", target_gap=0, steps=0).fit_transform(torch.as_tensor(table), labels)
    assert set(result.details["weights"]) == {"binary", "ordinal", "categorical"}
    after = linear_gaps(result.table)
    assert max(after.values()) <= 0.05, after


def test_relabel_transport_hands_out_the_original_rows_as_a_random_relabelling_would(device):
    """Each joint group receives the rows of a random group of its size: the rows are the original ones, and the
    share of a group's rows that come from its own members is the pooled share, not 1 (which would be no change)."""
    from core.unlearning.attribute.transport import joint_cells, relabel_assignment

    table, planted = planted_population(2000, dim=8, strength=1.0, seed=4)
    second = encode_attribute(pd.Series(np.random.default_rng(4).integers(0, 3, 2000)), "other", kind="categorical")
    labels = {"planted": planted, "other": second}
    x = torch.as_tensor(table).to(device)
    cells = joint_cells(group_codes(labels, len(x), device))
    source = relabel_assignment(x, cells, seed=0, batch_users=512)
    assert torch.equal(torch.sort(source).values, torch.arange(len(x)))  # a permutation: every row handed out once
    cells = cells.cpu()
    for cell in torch.unique(cells):
        receivers = cells == cell
        own = float((cells[source[receivers]] == cell).float().mean())
        assert own == pytest.approx(float(receivers.float().mean()), abs=0.08)
    edited = make_unlearner("transport", target_gap=0, batch_users=512).fit_transform(x, labels, device=device)
    assert torch.equal(edited.table, x.cpu()[source])
    assert 0.5 < edited.details["share_moved"] < 1.0


def test_relabel_transport_moves_each_user_to_a_near_row():
    """The assignment is a least-squared-move one: far less displacement than a random matching of the same
    relabelling, which would serve every moved user with an arbitrary row."""
    from core.unlearning.attribute.transport import relabel_assignment

    table, planted = planted_population(1500, dim=8, strength=1.0, seed=5)
    x = torch.as_tensor(table)
    cells = torch.as_tensor(planted.codes)
    source = relabel_assignment(x, cells, seed=1, batch_users=1500)
    assigned = (x[source] - x).pow(2).sum(1)
    shuffled = torch.zeros_like(source)
    for cell in (0, 1):  # the same givers per group, matched at random
        receivers = (cells == cell).nonzero().squeeze(1)
        givers = source[receivers]
        shuffled[receivers] = givers[torch.randperm(len(givers), generator=torch.Generator().manual_seed(0))]
    random = (x[shuffled] - x).pow(2).sum(1)
    assert float(assigned.mean()) < 0.5 * float(random.mean())


def test_relabel_transport_verifies_the_target_on_every_planted_signal():
    """A leak carried by a mean shift, a variance change and which taste cluster a user is in, together: the
    transport gives every default attacker a shuffled-label problem, and an independent audit agrees. (At 10,000
    users and more the closed-form start leaks more than such a table did: `bench/RESULTS.md`.)"""
    table, planted = planted_population(2500, dim=16, strength=1.0, seed=6)
    x, labels = torch.as_tensor(table), {"planted": planted}
    assert worst_gap(x, labels) > 0.15
    result = make_unlearner("transport").fit_transform(x, labels)
    assert result.details["reached"], result.details["log"]
    assert worst_gap(result.table, labels) <= 0.05
    assert torch.equal(torch.sort(result.table, 0).values, torch.sort(x, 0).values)  # the same rows, handed out again


@pytest.mark.parametrize("name", ["d2d_r", "transport"])
def test_a_table_that_already_meets_the_target_is_returned_unchanged(name):
    table, planted = planted_population(3000, dim=8, strength=0.0, seed=7)
    x = torch.as_tensor(table)
    result = make_unlearner(name).fit_transform(x, {"planted": planted})
    assert torch.equal(result.table, x) and result.details["reached"]
    assert result.notes.startswith("the original already meets the target")


def test_a_missed_target_points_to_the_transport_until_it_is_run():
    from core.unlearning.attribute import UnlearningResult, transport_hint

    def result(method, reached):
        return UnlearningResult(method, method, torch.zeros(1, 1), ("a",), 0.0, "cpu", (), {},
                                details={"reached": reached})

    assert "Relabel transport" in transport_hint([result("d2d_r", False), result("lego", True)])
    assert transport_hint([result("d2d_r", True)]) is None
    assert transport_hint([result("d2d_r", False), result("transport", False)]) is None
    # a miss whose derived view leaks through the items alone: the transport cannot clean that either, and says so
    carried = UnlearningResult("d2d_r", "D2D-R", torch.zeros(1, 1), ("a",), 0.0, "cpu", (), {}, details={
        "reached": False, "target_gap": 0.05, "with_user_rows_zeroed": {"a [propagated]": 0.39}})
    assert "through the items alone" in transport_hint([carried])
    assert "through the items alone" not in transport_hint([result("d2d_r", False)])


def test_a_verified_target_keeps_a_margin_for_an_independent_re_audit():
    """The audit reports each repeat's AUC; the margin a re-audit could move a gap is t·sqrt(2σ²/R) from their
    spread; a gap within the target whose margin is not counts as missed, so "no leak" survives one more audit."""
    from scipy import stats

    from core.unlearning.attribute.target import REAUDIT_CONFIDENCE, Leakage, reaudit_margin

    table, labels = planted_population(600, dim=16, strength=0.5, seed=3, signals=("mean",))
    audit = run_audit(table, {"planted": labels}, attackers=("logreg", "mlp"), n_permutations=0)
    for score in audit.scores:
        assert len(score.repeat_aucs) == 3
        assert np.mean(score.repeat_aucs) == pytest.approx(score.auc, abs=1e-9)
    spread = np.mean([np.var(s.repeat_aucs, ddof=1) for s in audit.scores])
    margin = reaudit_margin(audit.scores)
    # Student's quantile for the pooled 2 × 2 degrees of freedom of two attackers' three repeats
    assert margin == pytest.approx(stats.t.ppf(REAUDIT_CONFIDENCE, 4) * np.sqrt(2 * spread / 3)) and margin > 0
    assert reaudit_margin(run_audit(table, {"planted": labels}, attackers=("logreg",), n_permutations=0,
                                    protocol=CrossValidation(n_repeats=1)).scores) == 0.0
    borderline = Leakage({("user", "planted"): -0.045}, "5-fold CV ×3", {("user", "planted"): 0.01})
    assert borderline.worst == pytest.approx(0.045) and borderline.bound == pytest.approx(0.055)


def test_verification_refuses_a_gap_within_the_target_whose_re_audit_margin_is_not(monkeypatch):
    from core.unlearning.attribute import target

    table, labels = planted_population(300, dim=8, strength=0.0, seed=0, signals=("mean",))
    search = target.TargetSearch(torch.as_tensor(table), {"planted": labels}, None, torch.device("cpu"), 0.05, 0)
    for margin, verified in ((0.01, False), (0.004, True)):
        leakage = target.Leakage({("user", "planted"): 0.045}, "5-fold CV ×3", {("user", "planted"): margin})
        monkeypatch.setattr(target, "measure_leakage", lambda *args, **kwargs: leakage)
        assert search.verify(search.original, "candidate") is verified
        assert "re-audit margin" in search.log[-1]


def test_a_candidate_only_the_margin_keeps_out_is_audited_again_for_longer(monkeypatch):
    """Gaps within the target but not with their 3-repeat margin: audited again with 12 repeats on other partitions
    and judged on that audit alone, even where the 3-repeat spread, shrunk to 12 repeats, would still keep it out
    (0.045 + 0.79·0.010); gaps beyond the target: no second audit."""
    from core.unlearning.attribute import target

    table, labels = planted_population(300, dim=8, strength=0.0, seed=0, signals=("mean",))
    key = ("user", "planted")
    for first, second, extended, verified in (((0.035, 0.018), (0.036, 0.012), True, True),
                                              ((0.035, 0.018), (0.045, 0.012), True, False),
                                              ((0.045, 0.010), (0.040, 0.006), True, True),
                                              ((0.055, 0.010), None, False, False)):
        search = target.TargetSearch(torch.as_tensor(table), {"planted": labels}, None, torch.device("cpu"), 0.05, 0)
        calls = []

        def measured(candidate, labels_, model, device, seed, protocol, *rest):
            calls.append((seed, protocol))
            gap, margin = first if len(calls) == 1 else second
            return target.Leakage({key: gap}, protocol.label, {key: margin})

        monkeypatch.setattr(target, "measure_leakage", measured)
        assert search.verify(search.original, "candidate") is verified
        # a candidate let in is confirmed by a fresh audit as long as the one that let it in (here reading the same)
        expected = [target.VERIFY, target.VERIFY_LONG] if extended else [target.VERIFY]
        assert [c[1] for c in calls] == expected + ([expected[-1]] if verified else [])
        assert len({c[0] for c in calls}) == len(calls)  # every audit on partitions of its own
        if extended:
            assert "audited again with 5-fold CV ×12" in " ".join(search.log)
    # the margin of a 12-repeat audit keeps the re-audit's own 3-repeat noise: sqrt(1/12 + 1/3) of σ, not sqrt(2/12)
    assert target.margin_scale(12) == pytest.approx(np.sqrt(1 / 12 + 1 / 3))
    assert target.margin_scale(3) == pytest.approx(np.sqrt(2 / 3))


def test_a_try_ends_when_the_refinement_cannot_move_the_original(monkeypatch):
    """Started from θ* with an MMD that has nothing to push (flat), a chunk leaves the table as it was: the try ends
    there instead of auditing the same table again with the same folds for the rest of its budget."""
    from core.unlearning.attribute import d2d

    table, labels = planted_population(300, dim=8, strength=2.0, seed=0, signals=("mean",))
    monkeypatch.setattr(d2d, "represented_mmd", lambda rows, *args, **kwargs: rows.sum() * 0.0)
    result = make_unlearner("d2d_r", closed_form="off", tries=2, steps=100, seed=0).fit_transform(
        torch.as_tensor(table), {"planted": labels}, device=torch.device("cpu"))
    assert result.details["reached"] is False
    assert result.details["refinement_passes"] == 2 * d2d.REFINE_CHUNK  # one chunk per try, not 100 passes
    assert sum("the table did not move" in line for line in result.details["log"]) == 2
    assert torch.equal(result.table, torch.as_tensor(table))  # nothing leaked less than θ*: θ* is returned


def test_a_confirmation_near_the_edge_is_run_as_long_as_an_admission_would_be(monkeypatch):
    """The confirmation follows the admission's rule: a 3-repeat confirmation whose gaps are within the target but
    not with their margin is audited again with 12 repeats on partitions of its own."""
    from core.unlearning.attribute import target

    table, labels = planted_population(300, dim=8, strength=0.0, seed=0, signals=("mean",))
    key = ("user", "planted")
    for last, verified in ((0.036, True), (0.045, False)):
        search = target.TargetSearch(torch.as_tensor(table), {"planted": labels}, None, torch.device("cpu"), 0.05, 0)
        readings = iter([(0.02, 0.01), (0.035, 0.018), (last, 0.012)])
        calls = []

        def measured(candidate, labels_, model, device, seed, protocol, *rest):
            calls.append((seed, protocol))
            gap, margin = next(readings)
            return target.Leakage({key: gap}, protocol.label, {key: margin})

        monkeypatch.setattr(target, "measure_leakage", measured)
        assert search.verify(search.original, "candidate") is verified
        assert [c[1] for c in calls] == [target.VERIFY, target.VERIFY, target.VERIFY_LONG]
        assert len({c[0] for c in calls}) == 3
        assert search.last_audit.worst == pytest.approx(last)


def test_a_candidate_let_in_must_be_let_in_again_by_a_fresh_audit(monkeypatch):
    """The verification that lets a candidate in is the luckiest of the several the search ran; a fresh audit on
    other folds must agree, and its numbers are the ones reported."""
    from core.unlearning.attribute import target

    table, labels = planted_population(300, dim=8, strength=0.0, seed=0, signals=("mean",))
    key = ("user", "planted")
    for confirmation, verified in ((0.03, True), (0.06, False)):
        search = target.TargetSearch(torch.as_tensor(table), {"planted": labels}, None, torch.device("cpu"), 0.05, 0)
        seeds = []

        def measured(candidate, labels_, model, device, seed, protocol, *rest):
            seeds.append(seed)
            return target.Leakage({key: 0.02 if len(seeds) == 1 else confirmation}, protocol.label, {key: 0.01})

        monkeypatch.setattr(target, "measure_leakage", measured)
        assert search.verify(search.original, "candidate") is verified
        assert len(seeds) == 2 and seeds[0] != seeds[1]
        assert search.last_audit.worst == pytest.approx(confirmation)  # the fresh audit's numbers
        assert ("NOT confirmed" in search.log[-1]) is not verified
        if verified:
            assert search.verified.worst == pytest.approx(confirmation)


def test_the_search_draws_other_folds_than_the_audit_that_checks_it():
    """The probe, the verification and the longer verification each draw their partitions apart from an audit with
    the product's default seed, so the luck a candidate was picked for is not inherited by the audit that checks it."""
    from core.unlearning.attribute.target import PROBE, VERIFY, VERIFY_LONG, stage_seed

    codes = np.repeat([0, 1], 200)
    audit = {frozenset(test.tolist()) for _, test in make_folds(codes, CrossValidation(), 0, "a").pairs}
    for stage, protocol in (("probe", PROBE), ("verify", VERIFY), ("long", VERIFY_LONG)):
        folds = {frozenset(test.tolist()) for _, test in make_folds(codes, protocol, stage_seed(0, stage), "a").pairs}
        assert not folds & audit, stage
    assert len({stage_seed(0, s) for s in ("probe", "verify", "long")} | {stage_seed(1, "probe")}) == 4


def test_when_no_candidate_clears_the_margin_the_audited_one_within_the_target_is_returned(monkeypatch):
    """A candidate the full audit puts within the target (not its margin) beats one only a noisy probe liked."""
    from core.unlearning.attribute import target

    table, labels = planted_population(300, dim=8, strength=0.0, seed=0, signals=("mean",))
    original = torch.as_tensor(table)
    search = target.TargetSearch(original, {"planted": labels}, None, torch.device("cpu"), 0.05, 0)

    def measured(gap, margin=0.0):
        return lambda *args, **kwargs: target.Leakage({("user", "planted"): gap}, "cv", {("user", "planted"): margin})

    monkeypatch.setattr(target, "measure_leakage", measured(0.3))
    search.start()
    audited, probed = original + 1, original + 2
    monkeypatch.setattr(target, "measure_leakage", measured(0.045, 0.02))
    assert not search.verify(audited, "audited candidate")
    monkeypatch.setattr(target, "measure_leakage", measured(0.02))
    search.probe(probed, "probe-only candidate")
    returned, details, note = search.outcome(None)
    assert torch.equal(returned, audited) and not details["reached"] and details["within_target_not_margin"]
    assert "NOT with the margin" in note


def test_the_refinement_starts_from_the_original_when_every_closed_form_leaks_more(monkeypatch):
    """A closed form that shifts a multi-modal group off the other group's modes leaks more than the table did;
    the refinement must then start from the original, not from the less bad of two worse tables."""
    from core.unlearning.attribute import d2d, target

    table, labels = planted_population(300, dim=8, strength=1.0, seed=0, signals=("mean",))
    original = torch.as_tensor(table)
    starts = []
    monkeypatch.setattr(target, "measure_leakage", lambda candidate, *a, **k: target.Leakage(
        {("user", "planted"): 0.2 if torch.equal(candidate, original) else 0.3}, "cv"))
    monkeypatch.setattr(d2d, "d2d_optimise",
                        lambda original_, start, *a, steps=1, **k: (starts.append(start) or start, [0.0] * steps))
    groups = group_codes({"planted": labels}, len(original), torch.device("cpu"))
    config = make_unlearner("d2d_r", steps=20, tries=1)
    returned, _, extra = d2d.target_driven(config, original, groups, {"planted": labels}, None, None,
                                           torch.device("cpu"))
    assert len(starts) == 1 and torch.equal(starts[0], original)
    assert "starts from the original table" in " ".join(extra["details"]["log"])
    assert torch.equal(returned, original) and not extra["details"]["reached"]  # never worse than it found it


def test_a_closed_form_let_in_at_a_ranking_cost_is_refined_and_the_cheaper_table_returned():
    """A closed form moves every user of a group alike; when it is let in but keeps less than 99% of the ranking,
    the refinement runs from it and the table let in that keeps more is returned (real audits; the ranking here is
    one minus the mean relative move, as no model is involved)."""
    from core.unlearning.attribute import d2d

    table, labels = planted_population(2000, dim=8, strength=2.0, seed=0, signals=("mean",))
    original = torch.as_tensor(table)
    scale = original.norm(dim=1).mean()
    ranking = lambda candidate: 1 - float((candidate - original).norm(dim=1).mean() / scale)  # noqa: E731
    groups = group_codes({"planted": labels}, len(original), torch.device("cpu"))
    config = make_unlearner("d2d_r")
    closed = config._closed_form(original, groups)
    assert ranking(closed) < d2d.REFINE_BELOW  # the premise: the closed form costs
    returned, _, extra = d2d.target_driven(config, original, groups, {"planted": labels}, None, None,
                                           torch.device("cpu"), ranking=ranking)
    log = " ".join(extra["details"]["log"])
    assert extra["details"]["reached"] and "closed form (mean): let in, but keeps" in log
    assert "it is returned" in log and ranking(returned) > ranking(closed) + 0.01
    assert worst_gap(returned, {"planted": labels}) <= 0.05


def test_of_a_closed_form_and_its_refinement_both_let_in_the_one_that_ranks_better_is_returned(monkeypatch):
    """The choice is by ranking alone: a refinement let in that keeps less returns the closed form, with the
    closed form's own audit as the reported one; a closed form that keeps 99% or more is returned unrefined."""
    from core.unlearning.attribute import d2d, target

    table, labels = planted_population(300, dim=8, strength=1.0, seed=0, signals=("mean",))
    original = torch.as_tensor(table)
    audits = iter(range(1000))

    def measured(candidate, *a, **k):  # every candidate within the target; each audit a gap of its own
        gap = 0.5 if torch.equal(candidate, original) else 0.001 * (1 + next(audits) % 40)
        return target.Leakage({("user", "planted"): gap}, "cv")

    refined = []
    monkeypatch.setattr(target, "measure_leakage", measured)
    monkeypatch.setattr(d2d, "d2d_optimise", lambda original_, start, *a, steps=1, **k: (
        refined.append(start + 0.01) or refined[-1], [0.0] * steps))
    groups = group_codes({"planted": labels}, len(original), torch.device("cpu"))
    config = make_unlearner("d2d_r", closed_form="mean", tries=1)
    closed = config._closed_form(original, groups)
    kept = lambda candidate: 0.95 if torch.equal(candidate, closed) else 0.90  # noqa: E731
    returned, _, extra = d2d.target_driven(config, original, groups, {"planted": labels}, None, None,
                                           torch.device("cpu"), ranking=kept)
    log = extra["details"]["log"]
    assert len(refined) == 1 and torch.equal(refined[0], closed + 0.01)  # refined once, from the closed form
    assert torch.equal(returned, closed) and "closed form (mean) is returned" in log[-1]
    confirmed = [line for line in log if line.startswith("closed form (mean): confirmed")][0]
    assert f"worst |AUC − 0.5| {extra['details']['after']['planted [user]']:.3f}" in confirmed
    refined.clear()
    returned, _, extra = d2d.target_driven(config, original, groups, {"planted": labels}, None, None,
                                           torch.device("cpu"), ranking=lambda candidate: 0.995)
    assert not refined and torch.equal(returned, closed) and extra["details"]["reached"]


@pytest.mark.parametrize("refined_keeps", [0.97, 0.90])
def test_the_one_at_a_time_table_let_in_at_a_ranking_cost_is_refined_and_the_cheaper_returned(monkeypatch,
                                                                                              refined_keeps):
    """When the joint search misses and the attributes taken one at a time give a table let in that keeps less than
    99% of the validation ranking, the refinement runs once from it and, of the two tables let in, the one that keeps
    more is returned; the progress bar gives that refinement its own stretch after the stage's."""
    from core.unlearning.attribute import d2d, target

    table, labels = planted_population(300, dim=8, strength=1.0, seed=0, signals=("mean",))
    original = torch.as_tensor(table)
    request = {"a": labels, "b": labels}
    one_at_a_time_table = original + 1.0
    stage = {"after the joint try": False}
    starts = []

    def measured(candidate, *a, **k):  # the joint try leaks; from the one-at-a-time stage on, within the target
        gap = 0.02 if stage["after the joint try"] else 0.3
        return target.Leakage({("user", "a"): gap, ("user", "b"): gap}, "cv", {("user", "a"): 0.01})

    def one_at_a_time(config, original_, groups, labels_, model, search, progress, *rest):
        stage["after the joint try"] = True
        assert search.verify(one_at_a_time_table, "one attribute at a time")
        progress(1.0, "the last attribute")
        return one_at_a_time_table

    def optimise(original_, start, groups, config, model, progress, steps=1, **k):
        starts.append(start)
        progress(1.0, "the chunk's last pass")
        return start + 0.01, [0.0] * steps

    monkeypatch.setattr(target, "measure_leakage", measured)
    monkeypatch.setattr(d2d, "_one_at_a_time", one_at_a_time)
    monkeypatch.setattr(d2d, "d2d_optimise", optimise)
    kept = lambda candidate: 0.92 if torch.equal(candidate, one_at_a_time_table) else refined_keeps  # noqa: E731
    groups = group_codes(request, len(original), torch.device("cpu"))
    config = make_unlearner("d2d_r", closed_form="off", tries=1, steps=20)
    bar: list[float] = []
    returned, _, extra = d2d.target_driven(config, original, groups, request, None,
                                           lambda fraction, message: bar.append(fraction), torch.device("cpu"),
                                           one_at_a_time=True, ranking=kept)
    log = extra["details"]["log"]
    assert extra["details"]["reached"] and torch.equal(starts[-1], one_at_a_time_table)  # refined once, from it
    assert bar == sorted(bar) and bar[-1] == 1.0  # the refinement has its own stretch of the bar: it never steps back
    assert any(line.startswith("the one-at-a-time table: let in, but keeps 92.0%") for line in log)
    expected = one_at_a_time_table + 0.01 if refined_keeps > 0.92 else one_at_a_time_table
    assert torch.equal(returned, expected)


def test_a_search_that_misses_starts_again_from_another_draw_until_one_reaches(monkeypatch):
    """The search's path depends on its random draw (closed-form targets, probe folds); one that misses is tried
    again from other draws, each probing and verifying on other folds, and the first verified table is returned."""
    from core.unlearning.attribute import d2d, target

    table, labels = planted_population(300, dim=8, strength=1.0, seed=0, signals=("mean",))
    original = torch.as_tensor(table)
    seeds, tables = [], []

    def measured(candidate, labels_, model, device, seed, protocol, *rest):
        seeds.append((seed, protocol.n_repeats))
        reached = len({s for s, r in seeds if r == 1}) >= 3  # from the third try's folds on
        return target.Leakage({("user", "planted"): 0.02 if reached else 0.3}, protocol.label,
                              {("user", "planted"): 0.01})

    def moved(original_, start, *a, steps=1, **k):
        tables.append(start + 0.01 * (len(tables) + 1))
        return tables[-1], [0.0] * steps

    monkeypatch.setattr(target, "measure_leakage", measured)
    monkeypatch.setattr(d2d, "d2d_optimise", moved)
    groups = group_codes({"planted": labels}, len(original), torch.device("cpu"))
    config = make_unlearner("d2d_r", steps=20, closed_form="off", tries=3)
    returned, _, extra = d2d.target_driven(config, original, groups, {"planted": labels}, None, None,
                                           torch.device("cpu"))
    details = extra["details"]
    assert details["reached"] and details["tries"] == 3 and "try 3 of 3" in " ".join(details["log"])
    assert len({s for s, r in seeds if r == 1}) == 3  # each try probes on its own folds
    assert not torch.equal(returned, original) and torch.equal(returned, tables[-1])
    # one try only: the same misses end the search
    seeds.clear()
    _, _, extra = d2d.target_driven(make_unlearner("d2d_r", steps=20, closed_form="off", tries=1), original, groups,
                                    {"planted": labels}, None, None, torch.device("cpu"))
    assert not extra["details"]["reached"] and extra["details"]["tries"] == 1


def test_when_the_joint_search_misses_lego_aims_at_one_attribute_at_a_time(monkeypatch):
    """Several attributes: when the joint search misses, the attributes are aimed at one at a time (most leaking
    first) and the table is then verified on all of them together, even with a single joint try. The joint try is
    made to miss here; each single-attribute search and every audit are real (two attributes planted as mean
    shifts)."""
    from core.unlearning.attribute import d2d

    first, a = planted_population(2000, dim=8, strength=2.5, seed=0, signals=("mean",))
    second, b = planted_population(2000, dim=8, strength=1.5, seed=1, signals=("mean",))
    original = torch.as_tensor(first + second)
    labels = {"a": a, "b": b}
    searched = []
    real_search = d2d._search_once

    def joint_misses(config, original_, groups, *rest):
        searched.append(len(groups))
        return (None, 0, config.alpha) if len(groups) > 1 else real_search(config, original_, groups, *rest)

    monkeypatch.setattr(d2d, "_search_once", joint_misses)
    assert worst_gap(original, labels) > 0.15
    result = make_unlearner("lego", tries=1, joint_rounds=0, combination_steps=0).fit_transform(original, labels)
    log = " ".join(result.details["log"])
    assert "aiming at one attribute at a time (a, b)" in log and "a alone:" in log and "b alone:" in log  # a first
    assert "one attribute at a time, round 1: full audit" in log and searched[0] == 2 and 1 in searched
    # at 2,000 users the re-audit margin (~0.03) may keep it from being claimed, but the audit must let it in
    assert result.details["reached"] or result.details["within_target_not_margin"]
    assert worst_gap(result.table, labels) <= 0.05
    # without the stage the same misses end the search unreached
    searched.clear()
    off = make_unlearner("lego", tries=1, joint_rounds=0, combination_steps=0, one_at_a_time=False)
    missed = off.fit_transform(original, labels)
    assert not missed.details["reached"] and set(searched) == {2}
    # a miss that still leaks is the table's: no word that the check may be too weak, though 2,000 users would allow it
    assert max(map(abs, missed.details["after"].values())) > 0.05 and "an attacker at chance" not in missed.notes


def test_a_miss_says_when_the_population_is_too_small_for_a_decisive_check():
    """A miss whose result reads within the target gets the caution when the users are few: ML-100K-sized gender
    (273 / 670) does, 20,000 users with the same shares do not, nor does a result that reads beyond the target."""
    from core.unlearning.attribute.d2d import small_population_caution

    def groups_of(women: int, men: int):
        gender = encode_attribute(pd.Series(["F"] * women + ["M"] * men), "gender")
        return group_codes({"gender": gender}, women + men, torch.device("cpu"))

    caution = small_population_caution(groups_of(273, 670), 0.05, after=0.042)
    assert caution is not None and "0.5 ± 0.021" in caution and "reads 0.042" in caution
    assert small_population_caution(groups_of(273, 670), 0.05, after=0.061) is None  # still leaking: the table's
    assert small_population_caution(groups_of(5_800, 14_200), 0.05, after=0.042) is None
    assert small_population_caution(groups_of(273, 670), 0.15, after=0.042) is None  # a looser target is decisive


def test_a_second_round_aims_lower_at_what_kept_the_joint_audit_out(monkeypatch):
    """When the joint audit keeps the one-at-a-time table out, the second round searches only the attributes beyond
    the target (with their re-audit margins) again, each aimed lower by its excess: aimed at the same target, an
    attribute that alone passes its own audit would pass again unchanged. The joint searches and the first joint
    verification are forced to miss (a: 0.030 + margin 0.030, 0.01 over; b within); everything else is real."""
    from core.unlearning.attribute import d2d, target

    first, a = planted_population(1000, dim=8, strength=2.5, seed=0, signals=("mean",))
    second, b = planted_population(1000, dim=8, strength=1.5, seed=1, signals=("mean",))
    labels = {"a": a, "b": b}
    real_search, real_verify, real_driven = d2d._search_once, target.TargetSearch.verify, d2d.target_driven
    aims: list[tuple[str, float]] = []

    def joint_misses(config, original_, groups, *rest):
        return (None, 0, config.alpha) if len(groups) > 1 else real_search(config, original_, groups, *rest)

    def first_joint_verification_fails(self, table, what):
        if len(self.labels) > 1 and "round 1" in what:
            self.last_audit = target.Leakage({("user", "a"): 0.03, ("user", "b"): -0.01}, "forced",
                                             {("user", "a"): 0.03, ("user", "b"): 0.02})
            return False
        return real_verify(self, table, what)

    def recorded(config, original_, groups, labels_, *rest, **kw):
        if len(labels_) == 1:
            aims.append((next(iter(labels_)), round(config.target_gap, 4)))
        return real_driven(config, original_, groups, labels_, *rest, **kw)

    monkeypatch.setattr(d2d, "_search_once", joint_misses)
    monkeypatch.setattr(target.TargetSearch, "verify", first_joint_verification_fails)
    monkeypatch.setattr(d2d, "target_driven", recorded)
    result = make_unlearner("lego", tries=1, joint_rounds=0, combination_steps=0).fit_transform(
        torch.as_tensor(first + second), labels)
    assert aims == [("a", 0.05), ("b", 0.05), ("a", 0.04)]
    assert "round 2: again a (aimed at 0.040)" in " ".join(result.details["log"])


def test_sequential_d2d_on_one_attribute_is_d2d_r_with_no_second_audit(monkeypatch):
    """One attribute: sequential D2D-R is D2D-R (same table, same verdict); its search already verified the table,
    so no joint re-audit follows (on a million users that re-audit costs minutes)."""
    from core.unlearning.attribute import target

    table, planted = planted_population(1000, dim=8, strength=1.5, seed=2, signals=("mean",))
    labels = {"planted": planted}
    single = make_unlearner("d2d_r").fit_transform(torch.as_tensor(table), labels)
    starts = []
    real_start = target.TargetSearch.start
    monkeypatch.setattr(target.TargetSearch, "start", lambda self, *a: starts.append(1) or real_start(self, *a))
    sequential = make_unlearner("sequential_d2d").fit_transform(torch.as_tensor(table), labels)
    assert torch.equal(single.table, sequential.table)
    assert sequential.details["reached"] == single.details["reached"] and sequential.notes.endswith(single.notes)
    assert "per_attribute" not in sequential.details and len(starts) == 1


@pytest.mark.parametrize("falling, passes", [(True, 160), (False, 40)])
def test_the_pass_budget_grows_only_while_the_probe_keeps_falling(monkeypatch, falling, passes):
    """A leak that falls steadily gets more passes (up to 4× the budget); one that wanders within the probe's noise
    (2 standard errors of a chance AUC: 0.008 at 20,000 users) stops at the budget."""
    from core.unlearning.attribute import d2d, target

    table, labels = planted_population(20_000, dim=8, strength=1.0, seed=0, signals=("mean",))
    original = torch.as_tensor(table)
    steady = [0.18, 0.16, 0.14, 0.12, 0.10, 0.08, 0.07, 0.06]  # never within the target: the cap (4 × 40) ends it
    readings = iter([0.3, 0.2] + (steady if falling else [0.195, 0.2, 0.195, 0.2]))
    monkeypatch.setattr(target, "measure_leakage", lambda *a, **k: target.Leakage(
        {("user", "planted"): next(readings)}, "cv"))
    monkeypatch.setattr(d2d, "d2d_optimise", lambda original_, start, *a, steps=1, **k: (start, [0.0] * steps))
    groups = group_codes({"planted": labels}, len(original), torch.device("cpu"))
    config = make_unlearner("d2d_r", steps=40, closed_form="mean", tries=1)
    _, _, extra = d2d.target_driven(config, original, groups, {"planted": labels}, None, None, torch.device("cpu"))
    assert extra["details"]["refinement_passes"] == passes
    assert ("budget is extended" in " ".join(extra["details"]["log"])) is falling


def test_the_probe_noise_is_the_standard_error_of_a_chance_auc_at_the_probes_size():
    from core.unlearning.attribute.d2d import probe_noise, still_falling

    def noise(counts, probe_users=20_000):
        codes = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
        return probe_noise(group_codes({"a": encode_attribute(pd.Series(codes.numpy()), "a", kind="categorical")},
                                       len(codes), torch.device("cpu")), probe_users)

    assert noise([670, 273]) == pytest.approx(np.sqrt(944 / (12 * 670 * 273)))  # ML-100K gender: ~0.021
    assert noise([6000, 4000]) == pytest.approx(0.0059, abs=1e-4)
    assert noise([60_000, 40_000]) == pytest.approx(noise([12_000, 8_000]))  # the probe attacks ≤ 20,000 users
    one_vs_rest = [np.sqrt(931 / (12 * n * (930 - n))) for n in (500, 400, 30)]
    assert noise([500, 400, 30]) == pytest.approx(np.sqrt(np.sum(np.square(one_vs_rest))) / 3)  # the macro mean's
    # a steady fall is one, a search wandering by about the probe's noise is not (readings of a 10,000-user
    # cluster-signal run and of ML-100K BPR-MF with three attributes)
    assert still_falling([0.146, 0.122, 0.119, 0.071, 0.060, 0.070, 0.056], noise([6000, 4000]))
    assert not still_falling([0.147, 0.095, 0.077, 0.085, 0.057, 0.071], noise([670, 273]))


def test_lego_style_reuses_its_calibrations_and_the_key_depends_on_every_setting(demo_bpr, demo_labels):
    table = demo_bpr.model.user_table()
    cache = CalibrationCache()
    method = make_unlearner("lego", target_gap=0, steps=0)
    first = method.fit_transform(table, demo_labels, cache=cache)
    assert first.details["new_calibrations"] == 3 and first.details["reused_calibrations"] == 0
    dropped = method.fit_transform(table, {k: demo_labels[k] for k in ("gender", "age")}, cache=cache)
    assert dropped.details["new_calibrations"] == 0 and dropped.details["reused_calibrations"] == 2
    other_alpha = make_unlearner("lego", target_gap=0, steps=0, alpha=1.0, calibration_steps=5)
    again = other_alpha.fit_transform(table, {"gender": demo_labels["gender"]}, cache=cache)
    assert again.details["new_calibrations"] == 1  # α changes the calibration, so it must not come from the cache
    keys = [make_unlearner("lego", alpha=a)._keys(table, demo_labels, None)["gender"] for a in (1.0, 2.0)]
    assert keys[0] != keys[1]


# ------------------------------------------------------------------------------------------- every method runs


@pytest.mark.parametrize("name", ["d2d_r", "u2u_r", "leace", "lego", "joint_d2d", "sequential_d2d"])
def test_post_training_methods_reduce_leakage_on_the_demo(name, demo_bpr, demo_labels):
    labels = {"gender": demo_labels["gender"]} if name in ("d2d_r", "u2u_r") else demo_labels
    table = demo_bpr.model.user_table()
    params = {}
    if name in ("joint_d2d", "sequential_d2d"):  # the baselines: two attributes and one try (timing is the bench's)
        labels, params = {key: demo_labels[key] for key in ("gender", "age")}, {"tries": 1}
    elif name == "lego":  # at its fixed strength: its target search has tests of its own (one at a time, round 2)
        params = {"target_gap": 0}
    result = make_unlearner(name, **params).fit_transform(table, labels, demo_bpr.model)
    assert result.table.shape == table.shape and torch.isfinite(result.table).all()
    assert result.seconds > 0 and result.attributes == tuple(labels)
    before = run_audit(table, labels, attackers=("logreg",), n_permutations=0)
    after = run_audit(result.table, labels, attackers=("logreg",), n_permutations=0)
    assert abs(after.auc("gender", "logreg") - 0.5) < abs(before.auc("gender", "logreg") - 0.5) - 0.1
    if name == "sequential_d2d":  # a later attribute can undo an earlier one: judged on all of them together
        after_all = result.details["after"]
        assert set(result.details["per_attribute"]) == set(labels) and result.notes.startswith("All together: target")
        assert {key.split(" [")[0] for key in after_all} == set(labels)
        if result.details["reached"]:
            assert max(map(abs, after_all.values())) <= 0.05


def test_function_space_regulariser_runs_and_reduces_leakage(demo_bpr, demo_labels):
    model, labels = demo_bpr.model, {"gender": demo_labels["gender"]}
    table = model.user_table()
    result = make_unlearner("d2d_r", regularizer="function", alpha=1.0, target_gap=0).fit_transform(table, labels, model)
    assert torch.isfinite(result.table).all()
    after = run_audit(result.table, labels, attackers=("logreg",), n_permutations=0).auc("gender", "logreg")
    before = run_audit(table, labels, attackers=("logreg",), n_permutations=0).auc("gender", "logreg")
    assert after < before - 0.1


@pytest.mark.parametrize("name", ["int_retrain", "adv_int"])
def test_in_training_baselines_retrain_end_to_end_on_the_demo(name, demo_bpr, demo_labels, demo_split, device):
    labels = {"gender": demo_labels["gender"]}
    model = on(demo_bpr.model, device)
    result = make_unlearner(name, max_epochs=12).fit_transform(model.user_table(), labels, model, demo_split,
                                                               device=device)
    assert result.model is not None and result.model is not model
    assert torch.equal(result.table, result.model.user_table().cpu())
    assert len(result.loss_history) >= 1 and np.isfinite(result.loss_history).all()
    quality = evaluate_full(result.model.scorer(), demo_split, "test", ks=(20,), device=device)["NDCG@20"]
    assert quality > 0.02


@pytest.fixture(scope="module")
def demo_lightgcn(demo_split):
    from core.training import TrainConfig, train_model

    return train_model("lightgcn", demo_split, TrainConfig(max_epochs=4, lr=2e-2, batch_size=4096)).model


@pytest.fixture(scope="module")
def strong_lightgcn():
    """LightGCN on the demo's generator with gender, age and occupation shaping tastes more strongly (the earlier
    demo's effects, 0.24 / 0.2 / 0.176): there the items carry gender back into the propagated view."""
    from core.data import encode_attribute, make_synthetic, split_per_user
    from core.training import TrainConfig, train_model

    population = make_synthetic(effects=(0.24, 0.2, 0.176))
    split = split_per_user(population, seed=0)
    model = train_model("lightgcn", split, TrainConfig(max_epochs=4, lr=2e-2, batch_size=4096)).model
    return model, {"gender": encode_attribute(population.attributes["gender"], "gender")}


def test_lightgcn_unlearning_also_cleans_the_propagated_embeddings(strong_lightgcn):
    """Editing layer 0 alone can leave the attribute in the propagated embeddings (items carry it back in); the
    default matches the groups there too, and the target search probes both representations. (On this 4-epoch
    model the default does not reach the target; its best iterate leaves 0.08 there against 0.15 for layer 0 alone
    and 0.42 before. One try, not three: the assertions are on the best iterate. On the shipped demo, whose leak is
    weaker, layer 0 alone already leaves only 0.02 there, so it cannot show the difference.)"""
    model, labels = strong_lightgcn
    table = model.user_table()
    result = make_unlearner("d2d_r", tries=1).fit_transform(table, labels, model)  # one try: it misses anyway
    reps = {key.rsplit(" [", 1)[1].rstrip("]") for key in result.details["after"]}
    assert reps == {"layer0", "propagated"}
    table_only = make_unlearner("d2d_r", representations="table", target_gap=0, closed_form="off"
                                ).fit_transform(table, labels, model).table
    propagated = lambda t: model.representations(t)["propagated"]  # noqa: E731
    gap = lambda t: abs(run_audit(propagated(t), labels, attackers=("logreg",), n_permutations=0)  # noqa: E731
                        .auc("gender", "logreg") - 0.5)
    left_by_table_only = gap(table_only)
    assert left_by_table_only > 0.08  # the premise: items carry the attribute back into the propagated embeddings
    left = gap(result.table)
    assert left < 0.5 * gap(table)  # most of the propagated leak is gone
    assert left < left_by_table_only  # and more of it than by editing layer 0 alone


def test_a_miss_says_how_much_a_derived_view_carries_through_the_items_alone(demo_lightgcn, demo_bpr, demo_labels):
    """LightGCN's propagated view mixes in the embeddings of the items a user interacted with, so it leaks with
    every user row set to zero; a search that misses measures that and says it (the interactions themselves leak),
    and a model without derived views gets no such line. The miss is forced: no closed form, no refinement passes."""
    labels = {"gender": demo_labels["gender"]}
    forced_miss = dict(closed_form="off", steps=0, tries=1)
    result = make_unlearner("d2d_r", **forced_miss).fit_transform(demo_lightgcn.user_table(), labels, demo_lightgcn)
    assert not result.details["reached"]
    carried = result.details["with_user_rows_zeroed"]["gender [propagated]"]
    zeros = torch.zeros_like(demo_lightgcn.user_table())
    direct = run_audit(demo_lightgcn.representations(zeros)["propagated"], labels, attackers=("logreg",),
                       n_permutations=0).auc("gender", "logreg") - 0.5
    assert abs(direct) > 0.05  # the premise: the items alone carry gender here
    assert abs(carried) >= abs(direct) - 0.03  # the probe's strongest attacker reads at least as much
    assert "even with every user row set to zero" in result.notes
    assert any("with every user row set to zero" in line for line in result.details["log"])
    plain = make_unlearner("d2d_r", **forced_miss).fit_transform(demo_bpr.model.user_table(), labels, demo_bpr.model)
    assert not plain.details["reached"] and "with_user_rows_zeroed" not in plain.details


def test_validation_ranking_is_the_share_of_the_models_validation_ndcg_a_table_keeps(demo_bpr, demo_split):
    """1 for the model's own table, less for a disturbed one, from the validation part alone; None without a split."""
    from core.unlearning.attribute.target import validation_ranking

    model = demo_bpr.model
    kept = validation_ranking(model, demo_split, torch.device("cpu"))
    table = model.user_table()
    assert kept(table) == pytest.approx(1.0)
    noisy = table + 0.5 * table.std() * torch.randn(table.shape, generator=torch.Generator().manual_seed(0))
    expected = (evaluate_full(model.scorer(noisy), demo_split, "valid", ks=(20,))["NDCG@20"]
                / evaluate_full(model.scorer(), demo_split, "valid", ks=(20,))["NDCG@20"])
    assert kept(noisy) == pytest.approx(expected) and kept(noisy) < 0.95
    assert validation_ranking(model, None, torch.device("cpu")) is None
    assert validation_ranking(None, demo_split, torch.device("cpu")) is None
