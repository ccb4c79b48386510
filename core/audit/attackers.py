"""Attackers: each takes (x, codes, folds, n_classes, seed, device) and returns out-of-fold class probabilities per
fold. One registry, `ATTACKERS`; `DEFAULT_ATTACKERS` is what an audit uses unless told otherwise."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from joblib import Parallel, delayed
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from .protocols import Folds

# An attacker takes (X, codes, folds, n_classes, seed) and returns out-of-fold class probabilities per fold.

FoldProbabilities = list[np.ndarray]


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scaler = StandardScaler().fit(train)
    return scaler.transform(train), scaler.transform(test)


def attack_majority(x, codes, folds: Folds, n_classes: int, seed: int, device: torch.device) -> FoldProbabilities:
    """Baseline: always the training fold's class frequencies (AUC 0.5 by construction)."""
    out = []
    for train, test in folds.pairs:
        freq = np.bincount(codes[train], minlength=n_classes) / len(train)
        out.append(np.tile(freq, (len(test), 1)))
    return out


def attack_logreg(x, codes, folds: Folds, n_classes: int, seed: int, device: torch.device) -> FoldProbabilities:
    """Logistic regression on standardised inputs (a linear attacker)."""
    def one(train, test):
        xtr, xte = _standardise(x[train], x[test])
        model = LogisticRegression(max_iter=1000, random_state=seed).fit(xtr, codes[train])
        return _full_proba(model.predict_proba(xte), model.classes_, n_classes)
    return Parallel(n_jobs=2, prefer="threads")(delayed(one)(tr, te) for tr, te in folds.pairs)


def attack_xgboost(x, codes, folds: Folds, n_classes: int, seed: int, device: torch.device,
                   **overrides) -> FoldProbabilities:
    """XGBoost as in the reference code: depth 4, 50 trees, learning rate 0.5, histogram method."""
    settings = {"n_estimators": 50, "max_depth": 4, "learning_rate": 0.5, **overrides}
    from xgboost import XGBClassifier

    def one(train, test):
        present = np.unique(codes[train])
        remap = np.searchsorted(present, codes[train])
        model = XGBClassifier(**settings, tree_method="hist", n_jobs=1, random_state=seed, verbosity=0)
        model.fit(x[train], remap)
        return _full_proba(model.predict_proba(x[test]), present, n_classes)
    return Parallel(n_jobs=2, prefer="threads")(delayed(one)(tr, te) for tr, te in folds.pairs)


def _full_proba(proba: np.ndarray, classes: np.ndarray, n_classes: int) -> np.ndarray:
    full = np.zeros((len(proba), n_classes))
    full[:, classes] = proba
    return full


def attack_mlp(x, codes, folds: Folds, n_classes: int, seed: int, device: torch.device,
               hidden: tuple[int, ...] = (100,), alpha: float = 1.0, steps: int = 150, lr: float = 0.02,
               penalty_batch: int = 200) -> FoldProbabilities:
    """ReLU layers `hidden` with L2 alpha/(2b)·‖W‖² beside the mean loss, b = min(n, `penalty_batch`), all folds
    trained at once as one batched model (full-batch Adam on standardised inputs, Glorot-uniform initialisation as
    scikit-learn's). b is scikit-learn's convention: its MLPClassifier adds alpha/(2·batch size) per mini-batch of
    200, so its L2 is n/200 times stronger than alpha/(2n); matching it is what makes this attacker as strong as
    the reference on a few thousand users (weaker L2 over-fits the weak signals an audit looks for)."""
    n_folds = len(folds.pairs)
    n_train = max(len(tr) for tr, _ in folds.pairs)
    n_test = max(len(te) for _, te in folds.pairs)
    d = x.shape[1]
    xtr = np.zeros((n_folds, n_train, d), np.float32)
    xte = np.zeros((n_folds, n_test, d), np.float32)
    ytr = np.zeros((n_folds, n_train), np.int64)
    wtr = np.zeros((n_folds, n_train), np.float32)
    for f, (train, test) in enumerate(folds.pairs):
        a, b = _standardise(x[train], x[test])
        xtr[f, : len(train)], xte[f, : len(test)] = a, b
        ytr[f, : len(train)], wtr[f, : len(train)] = codes[train], 1.0
    xtr_t, xte_t = torch.as_tensor(xtr, device=device), torch.as_tensor(xte, device=device)
    ytr_t, wtr_t = torch.as_tensor(ytr, device=device), torch.as_tensor(wtr, device=device)
    counts = wtr_t.sum(1)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    sizes = (d, *hidden, n_classes)
    weights, biases = [], []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = np.sqrt(6 / (fan_in + fan_out))
        weights.append(((torch.rand(n_folds, fan_in, fan_out, generator=generator) * 2 - 1) * bound)
                       .to(device).requires_grad_())
        biases.append(((torch.rand(n_folds, 1, fan_out, generator=generator) * 2 - 1) * bound)
                      .to(device).requires_grad_())

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        for i, (w, b) in enumerate(zip(weights, biases)):
            inputs = inputs @ w + b
            if i < len(weights) - 1:
                inputs = torch.relu(inputs)
        return inputs

    optimizer = torch.optim.Adam([*weights, *biases], lr=lr)
    for _ in range(steps):
        logits = forward(xtr_t)
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, n_classes), ytr_t.reshape(-1), reduction="none")
        data_loss = (nll.reshape(n_folds, n_train) * wtr_t).sum(1) / counts
        penalty = alpha / (2 * counts.clamp(max=penalty_batch)) * sum(w.pow(2).sum((1, 2)) for w in weights)
        loss = (data_loss + penalty).sum()  # independent per fold: the sum keeps their gradients separate
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        proba = torch.softmax(forward(xte_t), dim=-1).cpu().numpy()
    return [proba[f, : len(test)] for f, (_, test) in enumerate(folds.pairs)]


def attack_mlp_wide(x, codes, folds: Folds, n_classes: int, seed: int, device: torch.device) -> FoldProbabilities:
    """A wider, deeper MLP (256 × 256, lighter L2, more steps): the thorough audit's non-linear attacker."""
    return attack_mlp(x, codes, folds, n_classes, seed, device, hidden=(256, 256), alpha=0.1, steps=300, lr=0.005)


def attack_kernel(x, codes, folds: Folds, n_classes: int, seed: int, device: torch.device) -> FoldProbabilities:
    """An RBF-kernel attacker: logistic regression on a 512-component Nyström map of the standardised inputs
    (an RBF SVM's feature space, at a cost linear in the users)."""
    from sklearn.kernel_approximation import Nystroem

    def one(train, test):
        xtr, xte = _standardise(x[train], x[test])
        mapper = Nystroem(gamma=1.0 / x.shape[1], n_components=min(512, len(train)), random_state=seed).fit(xtr)
        model = LogisticRegression(max_iter=1000, C=1.0, random_state=seed).fit(mapper.transform(xtr), codes[train])
        return _full_proba(model.predict_proba(mapper.transform(xte)), model.classes_, n_classes)
    return Parallel(n_jobs=2, prefer="threads")(delayed(one)(tr, te) for tr, te in folds.pairs)


def attack_xgboost_tuned(x, codes, folds: Folds, n_classes: int, seed: int, device: torch.device
                         ) -> FoldProbabilities:
    """Boosted trees with a slower, regularised schedule (300 trees, depth 5, learning rate 0.05, row and column
    subsampling): usually stronger than the reference code's 50 fast trees."""
    return attack_xgboost(x, codes, folds, n_classes, seed, device, n_estimators=300, max_depth=5,
                          learning_rate=0.05, subsample=0.8, colsample_bytree=0.8)


def attack_mlp_sklearn(x, codes, folds: Folds, n_classes: int, seed: int, device: torch.device) -> FoldProbabilities:
    """The reference: scikit-learn's MLPClassifier(hidden_layer_sizes=(100,), alpha=1.0, max_iter=1000) on
    standardised inputs, one fit per fold. Tens of times slower than `attack_mlp`; offered so that anyone can
    check that the batched attacker is no weaker (tests and the audit bench compare the two)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    def one(train, test):
        xtr, xte = _standardise(x[train], x[test])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = MLPClassifier(hidden_layer_sizes=(100,), alpha=1.0, max_iter=1000, random_state=seed)
            model.fit(xtr, codes[train])
        return _full_proba(model.predict_proba(xte), model.classes_, n_classes)
    return Parallel(n_jobs=2, prefer="threads")(delayed(one)(tr, te) for tr, te in folds.pairs)


@dataclass(frozen=True)
class AttackerInfo:
    name: str
    label: str
    description: str
    factory: Callable[..., FoldProbabilities]
    baseline: bool = False  # a baseline is shown but never decides the verdict


ATTACKERS: dict[str, AttackerInfo] = {
    "mlp": AttackerInfo("mlp", "MLP", "one hidden layer of 100 units, L2 1.0 (the paper's attacker)", attack_mlp),
    "xgboost": AttackerInfo("xgboost", "XGBoost", "50 trees of depth 4, learning rate 0.5 (the reference code's)",
                            attack_xgboost),
    "logreg": AttackerInfo("logreg", "Logistic regression", "a linear attacker on standardised inputs", attack_logreg),
    "mlp_sklearn": AttackerInfo("mlp_sklearn", "MLP (scikit-learn)", "the reference MLPClassifier, same architecture "
                                "as MLP; slower, for cross-checking it", attack_mlp_sklearn),
    "mlp_wide": AttackerInfo("mlp_wide", "MLP 256×256", "two hidden layers of 256 units, L2 0.1 (thorough audit)",
                             attack_mlp_wide),
    "kernel": AttackerInfo("kernel", "RBF kernel", "logistic regression on a Nyström RBF feature map (thorough audit)",
                           attack_kernel),
    "xgboost_tuned": AttackerInfo("xgboost_tuned", "XGBoost (tuned)", "300 trees of depth 5, learning rate 0.05, "
                                  "subsampled (thorough audit)", attack_xgboost_tuned),
    "majority": AttackerInfo("majority", "Majority class", "baseline: predicts class frequencies, AUC 0.5",
                             attack_majority, baseline=True),
}

# The default audit: a linear attacker beside the non-linear ones, since a mirror below 0.5 (an exact in-sample
# erasure) shows first to a linear attacker. The thorough set is for release audits.
DEFAULT_ATTACKERS: tuple[str, ...] = ("mlp", "xgboost", "logreg")
THOROUGH_ATTACKERS: tuple[str, ...] = (*DEFAULT_ATTACKERS, "mlp_wide", "kernel", "xgboost_tuned")
ATTACKER_SETS: dict[str, tuple[str, ...]] = {"default": DEFAULT_ATTACKERS, "thorough": THOROUGH_ATTACKERS}
