"""The leakage audit: attackers, protocols, honest two-sided verdicts, uploads and the CLI gate (SPEC section 4)."""
import io
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.attacks import ATTACKERS, CrossValidation, ShadowSplit, make_folds, run_audit
from core.data import DataError, encode_attribute
from core.uploads import prepare_upload

ROOT = Path(__file__).resolve().parents[1]


def gaussian_groups(n_per_class=200, dim=16, shift=0.8, seed=0, n_classes=2):
    """Users whose only signal is a mean shift between classes."""
    rng = np.random.default_rng(seed)
    codes = np.repeat(np.arange(n_classes), n_per_class)
    table = rng.normal(size=(len(codes), dim))
    table[:, :4] += shift * codes[:, None]
    labels = encode_attribute(pd.Series(np.array(list("abcdefg"))[codes], name="group"), "group")
    return table.astype(np.float32), labels


def test_every_attacker_finds_a_planted_signal_and_the_baseline_does_not():
    table, labels = gaussian_groups()
    result = run_audit(table, {"group": labels}, attackers=tuple(ATTACKERS))
    for attacker in [a for a, info in ATTACKERS.items() if not info.baseline]:
        assert result.auc("group", attacker) > 0.75
        assert result.score("group", attacker).p_value < 0.05
    assert result.auc("group", "majority") == pytest.approx(0.5)
    verdict = result.verdict("group")
    assert verdict.leaks and "leaks" in verdict.explanation
    frame = result.to_frame()
    assert len(frame) == len(ATTACKERS) and {"AUC", "AUC low", "AUC high", "macro-F1", "p-value"} <= set(frame.columns)
    low, high = frame["AUC low"], frame["AUC high"]
    assert ((low <= frame["AUC"]) & (frame["AUC"] <= high)).all()
    assert '"verdicts"' in result.to_json() and "| group" in result.to_markdown()
    score = result.score("group", "mlp")
    assert score.roc_fpr[0] == 0 and score.roc_fpr[-1] == 1 and score.roc_tpr[-1] == pytest.approx(1)


def test_multiclass_attribute_uses_macro_one_vs_rest_auc():
    table, labels = gaussian_groups(n_per_class=80, n_classes=3, shift=1.0)
    result = run_audit(table, {"group": labels}, attackers=("logreg",), n_permutations=30)
    assert labels.n_classes == 3
    assert result.auc("group", "logreg") > 0.7


def test_same_seed_same_numbers():
    table, labels = gaussian_groups(n_per_class=60)
    first = run_audit(table, {"group": labels}, n_permutations=20, seed=3).to_frame()
    second = run_audit(table, {"group": labels}, n_permutations=20, seed=3).to_frame()
    pd.testing.assert_frame_equal(first.drop(columns="seconds"), second.drop(columns="seconds"))


def test_random_embeddings_show_no_significant_leakage(ml100k_labels):
    table = np.random.default_rng(11).normal(size=(943, 64)).astype(np.float32)
    result = run_audit(table, ml100k_labels, )
    for verdict in result.verdicts:
        assert not verdict.leaks, verdict.explanation
        assert "No significant leakage" in verdict.explanation


def test_forced_equal_group_means_give_auc_below_half_and_still_count_as_leakage():
    table, labels = gaussian_groups(n_per_class=150, shift=1.0)
    codes = labels.codes
    equalised = table.copy()
    for c in (0, 1):  # subtract each group's mean, add the global mean: the means are now exactly equal
        equalised[codes == c] += table.mean(0) - table[codes == c].mean(0)
    result = run_audit(equalised, {"group": labels}, attackers=("logreg", "mlp"), )
    assert result.auc("group", "logreg") < 0.42  # the CV mirror effect: each fold's difference reverses the rest's
    verdict = result.verdict("group")
    assert verdict.auc < 0.45
    assert verdict.leaks
    assert "far below 0.5" in verdict.explanation and "better than random" not in verdict.explanation


def test_shadow_split_trains_on_the_requested_fraction():
    codes = np.repeat([0, 1], 100)
    folds = make_folds(codes, ShadowSplit(train_fraction=0.1, n_repeats=2), 0, "g")
    assert len(folds.pairs) == 2
    for train, test in folds.pairs:
        assert len(train) == 20 and len(test) == 180 and not set(train) & set(test)


def test_small_classes_reduce_the_folds_and_say_so():
    codes = np.array([0] * 50 + [1] * 3)
    folds = make_folds(codes, CrossValidation(), 0, "rare")
    assert len(folds.pairs) == 3 * 3 and "3-fold CV was used instead of 5-fold" in folds.notes[0]
    with pytest.raises(DataError, match="only 1 user"):
        make_folds(np.array([0] * 10 + [1]), CrossValidation(), 0, "rare")


def test_ml100k_bpr_mf_leaks_gender(ml100k_bpr, ml100k_labels):
    table = ml100k_bpr.model.user_table()
    assert table.shape == (943, 64)
    result = run_audit(table, {"gender": ml100k_labels["gender"]})
    for attacker in ("mlp", "xgboost"):
        assert result.auc("gender", attacker) >= 0.60
        assert result.score("gender", attacker).p_value < 0.05
    assert result.verdict("gender").leaks


def test_batched_mlp_attacker_is_no_weaker_than_scikit_learns(ml100k_bpr, ml100k_labels):
    """The audit's MLP is a batched torch re-implementation (for speed); it must find at least as much as the
    reference MLPClassifier, before and after unlearning and on U2U-R's needles, or every 'removed' is suspect."""
    from core.attribute_unlearning import make_unlearner

    labels = {"gender": ml100k_labels["gender"]}
    table = ml100k_bpr.model.user_table()
    tables = {"original": table, "D2D-R": make_unlearner("d2d_r").fit_transform(table, labels).table,
              "U2U-R": make_unlearner("u2u_r_closed").fit_transform(table, labels).table}
    for name, values in tables.items():
        for protocol in (CrossValidation(n_repeats=1), ShadowSplit(n_repeats=2)):
            result = run_audit(values, labels, attackers=("mlp", "mlp_sklearn"), protocol=protocol, n_permutations=0)
            ours, reference = result.auc("gender", "mlp"), result.auc("gender", "mlp_sklearn")
            assert abs(ours - 0.5) >= abs(reference - 0.5) - 0.02, (name, protocol.label, ours, reference)
            if name == "original":
                assert ours == pytest.approx(reference, abs=0.03)


# ------------------------------------------------------------------------------------------------ uploads


def attributes_csv(n=40):
    return ("user_id,gender\n" + "\n".join(f"{u},{'MF'[u % 2]}" for u in range(n))).encode()


def test_upload_of_a_clean_npy_with_matching_ids():
    table = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    buffer = io.BytesIO()
    np.save(buffer, table)
    upload = prepare_upload(buffer.getvalue(), attributes_csv(), "emb.npy", "attrs.csv")
    assert upload.table.shape == (40, 8) and list(upload.attributes["gender"][:2]) == ["M", "F"]
    assert "no user-id column" in upload.warnings[0]


def test_upload_with_nans_names_the_rows():
    table = np.random.default_rng(0).normal(size=(40, 8))
    table[[3, 17]] = np.nan
    csv = pd.DataFrame(table).assign(user_id=np.arange(40)).to_csv(index=False).encode()
    with pytest.raises(DataError, match=r"emb.csv: 2 rows contain NaN or infinite values \(first rows: 4, 18\)"):
        prepare_upload(csv, attributes_csv(), "emb.csv", "attrs.csv")


def test_pickled_npy_is_refused():
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="pickled data.*never loaded"):
        prepare_upload(buffer.getvalue(), attributes_csv(), "emb.npy", "attrs.csv")
    raw_pickle = pickle.dumps(np.zeros((40, 4)))
    with pytest.raises(DataError):
        prepare_upload(raw_pickle, attributes_csv(), "emb.npy", "attrs.csv")


def test_unmatched_ids_are_counted_and_shown():
    frame = pd.DataFrame(np.zeros((40, 4))).assign(user_id=np.arange(1000, 1040))
    with pytest.raises(DataError, match=r"only 0 user ids appear in both files: 40 ids of emb.csv are not in "
                                        r"attrs.csv \(e.g. \[1000, 1001, 1002, 1003, 1004\]\)"):
        prepare_upload(frame.to_csv(index=False).encode(), attributes_csv(), "emb.csv", "attrs.csv")


def test_non_numeric_embedding_cell_is_named():
    frame = pd.DataFrame(np.zeros((40, 3)), columns=["d0", "d1", "d2"]).astype(object)
    frame.iloc[5, 1] = "oops"  # the sixth data row sits on line 7, under the header
    with pytest.raises(DataError, match=r"emb.csv line 7, column 'd1': 'oops' is not a number"):
        prepare_upload(frame.to_csv(index=False).encode(), attributes_csv(), "emb.csv", "attrs.csv")


def test_single_class_attribute_is_refused():
    with pytest.raises(DataError, match="single class"):
        encode_attribute(pd.Series(["M"] * 40, name="gender"))


# ------------------------------------------------------------------------------------------------ CLI gate


def run_gate(embeddings: Path, attributes: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "core", "audit", "--embeddings", str(embeddings), "--attributes", str(attributes),
         "--attribute", "gender", "--max-auc", "0.6", *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )


def test_cli_gate_blocks_the_movielens_embedding_and_passes_random_ones(tmp_path, ml100k_bpr, ml100k):
    attributes = tmp_path / "attributes.csv"
    ml100k.attributes.assign(user_id=np.arange(ml100k.n_users))[["user_id", "gender", "age"]].to_csv(attributes, index=False)
    leaky, random = tmp_path / "bpr.npy", tmp_path / "random.npy"
    np.save(leaky, ml100k_bpr.model.user_table().numpy())
    np.save(random, np.random.default_rng(5).normal(size=(943, 64)).astype(np.float32))
    blocked = run_gate(leaky, attributes, "--report", str(tmp_path / "report.json"))
    assert blocked.returncode == 1, blocked.stdout + blocked.stderr
    assert "GATE FAILED: gender leaks" in blocked.stdout and (tmp_path / "report.json").exists()
    passed = run_gate(random, attributes)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "gate passed" in passed.stdout


def test_cli_gate_explains_bad_input(tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    attributes = tmp_path / "attributes.csv"
    attributes.write_bytes(attributes_csv())
    result = run_gate(bad, attributes)
    assert result.returncode == 2 and "pickled data" in result.stderr and "Traceback" not in result.stderr
