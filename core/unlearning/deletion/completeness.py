"""Completeness of a deletion (SPEC section 6), read off ONE scoring pass together with test accuracy.

`scan(model, request, probe)` calls `model.scorer()` once and, batch by batch of users, derives from the same score
matrix: the full-ranking test metrics (retained training and validation items masked, as core.metrics does), the
rank of every forgotten item among the items the user still has not got, the scores of the forgotten pairs and of
as many retained training pairs, membership-inference features of probe pairs, and every user's top-20. So the
ranking behind NDCG and the scores behind completeness cannot disagree (a LightUL-style model has Ω baked into its
tables, so Ω is in every one of these scores).

Measures, always shown beside Retrain's:
- forgotten-vs-retained AUC: P(score of a random retained training pair > score of a forgotten pair); a model that
  never trained on the forgotten pairs scores them like held-out positives, below retained ones (> 0.5);
- forget hit rate@20: share of forgotten pairs whose item is in the user's top-20 (retained items masked), and the
  median rank (1 = top) of forgotten items;
- membership inference: logistic regression on (score, within-user z-score, within-user rank percentile), fitted to
  tell retained training pairs from validation pairs with this model's scores, then its AUC for forgotten pairs
  against test pairs (never trained on): 0.5 = the forgotten pairs look never seen;
- Jaccard@20 of every user's top-20 with Retrain's (evaluation.py, from the two scans' top-20 lists).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from ...device import canonical
from ...metrics import RankingResult, _csr_rows_dense, ranking_metrics_from_scores
from ...models import Recommender
from .request import ForgetRequest

TOP_K = 20
ACCURACY_KS = (20, 50)


@dataclass(frozen=True, eq=False)
class Probe:
    """The pairs every model of one request is measured on (the same for all methods, seeded)."""

    forgotten: np.ndarray  # the request's pairs
    retained: np.ndarray  # as many retained training pairs (label 1 of the completeness AUC)
    members: np.ndarray  # retained training pairs the membership attacker learns from
    non_members: np.ndarray  # validation pairs it learns from
    held_out: np.ndarray  # test pairs the forgotten pairs are compared with


def _sample(pairs: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    chosen = pairs if len(pairs) <= n else pairs[np.sort(rng.choice(len(pairs), n, replace=False))]
    return chosen[np.lexsort((chosen[:, 1], chosen[:, 0]))]


def make_probe(request: ForgetRequest, seed: int = 0, max_pairs: int = 20_000) -> Probe:
    """Seeded samples of retained, validation and test pairs for one request; at most `max_pairs` each."""
    rng = np.random.default_rng(seed)
    retained = request.retained_split
    forgotten = request.pairs[np.lexsort((request.pairs[:, 1], request.pairs[:, 0]))]
    n = min(max_pairs, len(forgotten))
    held_out = retained.test if len(retained.test) else request.split.test
    return Probe(forgotten, _sample(retained.train, n, rng), _sample(retained.train, max_pairs // 2, rng),
                 _sample(retained.valid, max_pairs // 2, rng), _sample(held_out, max_pairs, rng))


@dataclass(frozen=True, eq=False)
class Scan:
    """Everything read off one scoring pass of one model."""

    ranking: RankingResult
    forget_ranks: np.ndarray  # 0-based rank of each forgotten item among items not retained by the user
    forgotten_scores: np.ndarray
    retained_scores: np.ndarray
    features: dict[str, np.ndarray] = field(repr=False)  # probe part -> (n, 3) membership features
    top_k: np.ndarray = field(repr=False)  # (N, 20) item indices, retained training and validation masked


def _rows_of(pairs: np.ndarray, start: int, end: int) -> slice:
    return slice(int(np.searchsorted(pairs[:, 0], start)), int(np.searchsorted(pairs[:, 0], end)))


def _pair_stats(scores: torch.Tensor, rows: torch.Tensor, items: torch.Tensor, max_elements: int = 1 << 24):
    """Per pair: its score, its rank among the row's items (ties broken by the lower item index, as the stable
    sort of core.metrics does), and the row's mean and std; -inf entries are excluded from ranks. Pairs are taken in
    chunks of at most `max_elements` gathered scores, which bounds memory for large catalogues."""
    chunk = max(1, min(4096, max_elements // max(1, scores.shape[1])))
    out_score, out_rank, out_mean, out_std = [], [], [], []
    index = torch.arange(scores.shape[1], device=scores.device)
    finite = torch.isfinite(scores)
    clean = torch.where(finite, scores, torch.zeros_like(scores))
    counts = finite.sum(1).clamp(min=1)
    means = clean.sum(1) / counts
    stds = (((clean - means[:, None]) * finite).pow(2).sum(1) / counts).sqrt()
    for start in range(0, len(rows), chunk):
        r, i = rows[start : start + chunk], items[start : start + chunk]
        row_scores = scores[r]
        value = row_scores.gather(1, i[:, None])
        above = (row_scores > value) | ((row_scores == value) & (index[None, :] < i[:, None]))
        out_score.append(value[:, 0])
        out_rank.append(above.sum(1))
        out_mean.append(means[r])
        out_std.append(stds[r])
    def cat(parts, dtype):
        return torch.cat(parts).cpu().numpy().astype(dtype) if parts else np.zeros(0, dtype)
    return (cat(out_score, np.float64), cat(out_rank, np.int64), cat(out_mean, np.float64), cat(out_std, np.float64))


@torch.no_grad()
def scan(model: Recommender, request: ForgetRequest, probe: Probe, batch_size: int = 1024,
         device: torch.device | str | None = None) -> Scan:
    """Score every user once with `model.scorer()` and read accuracy and completeness off those scores."""
    device = canonical(device) if device is not None else model.device
    retained = request.retained_split
    scorer = model.scorer()  # the one scoring call every number below comes from
    targets = retained.matrix("test")
    seen = (retained.train_matrix + retained.matrix("valid")).tocsr()
    n_items = retained.n_items
    has_test = np.diff(targets.indptr) > 0
    per_user: dict[str, list[torch.Tensor]] = {}
    parts = {"forgotten": probe.forgotten, "retained": probe.retained, "members": probe.members,
             "non_members": probe.non_members, "held_out": probe.held_out}
    collected: dict[str, list[tuple]] = {name: [] for name in parts}
    forget_ranks, tops = [], []
    for start in range(0, retained.n_users, batch_size):
        end = min(start + batch_size, retained.n_users)
        batch = np.arange(start, end)
        raw = scorer(torch.as_tensor(batch, device=device)).float()
        seen_rows = _csr_rows_dense(seen, batch, raw.device)
        masked = raw.masked_fill(seen_rows, float("-inf"))
        # accuracy: exactly core.metrics' full ranking on the users with test items
        rows = np.flatnonzero(has_test[batch])
        if len(rows):
            metrics = ranking_metrics_from_scores(raw[rows], _csr_rows_dense(targets, batch[rows], raw.device),
                                                  seen_rows[rows], ACCURACY_KS)
            for name, values in metrics.items():
                per_user.setdefault(name, []).append(values.cpu())
        tops.append(torch.sort(masked, dim=1, descending=True, stable=True).indices[:, :TOP_K].cpu())
        for name, pairs in parts.items():
            chunk = pairs[_rows_of(pairs, start, end)]
            if not len(chunk):
                continue
            r = torch.as_tensor(chunk[:, 0] - start, device=raw.device)
            i = torch.as_tensor(chunk[:, 1], device=raw.device)
            collected[name].append(_pair_stats(raw, r, i))
            if name == "forgotten":
                forget_ranks.append(_pair_stats(masked, r, i)[1])
    arrays = {name: torch.cat(values).numpy() for name, values in per_user.items()}
    ranking = RankingResult({n: float(v.mean()) if len(v) else 0.0 for n, v in arrays.items()}, "full", "test",
                            int(has_test.sum()), arrays)
    stats = {name: tuple(np.concatenate(column) if column else np.zeros(0) for column in zip(*values))
             if values else (np.zeros(0),) * 4 for name, values in collected.items()}
    features = {name: _features(*values, n_items) for name, values in stats.items()}
    return Scan(ranking, np.concatenate(forget_ranks) if forget_ranks else np.zeros(0, np.int64),
                stats["forgotten"][0], stats["retained"][0], features, torch.cat(tops).numpy())


def _features(score, rank, mean, std, n_items) -> np.ndarray:
    """Membership features of pairs: raw score, within-user z-score, within-user rank percentile."""
    return np.stack([score, (score - mean) / np.maximum(std, 1e-12), rank / max(1, n_items - 1)], 1)


def auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """P(a random positive scores above a random negative), ties counted half; NaN when a side is empty."""
    if not len(positives) or not len(negatives):
        return float("nan")
    labels = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
    return float(roc_auc_score(labels, np.r_[positives, negatives]))


def membership_auc(features: dict[str, np.ndarray], seed: int = 0) -> float:
    """Fit the attacker on members vs non-members of this model, then its AUC for forgotten vs held-out pairs."""
    members, non_members = features["members"], features["non_members"]
    if not len(members) or not len(non_members) or not len(features["forgotten"]) or not len(features["held_out"]):
        return float("nan")
    x = np.concatenate([members, non_members])
    y = np.r_[np.ones(len(members)), np.zeros(len(non_members))]
    scale = x.std(0) + 1e-12
    centre = x.mean(0)
    attacker = LogisticRegression(max_iter=500, random_state=seed).fit((x - centre) / scale, y)
    guess = lambda part: attacker.decision_function((features[part] - centre) / scale)  # noqa: E731
    return auc(guess("forgotten"), guess("held_out"))


def completeness(scan_: Scan, seed: int = 0) -> dict[str, float]:
    """The completeness measures of one scan (Jaccard with Retrain is added by the evaluation)."""
    ranks = scan_.forget_ranks
    return {
        "forgotten-vs-retained AUC": auc(scan_.retained_scores, scan_.forgotten_scores),
        f"forget HR@{TOP_K}": float(np.mean(ranks < TOP_K)) if len(ranks) else float("nan"),
        "median forgotten rank": float(np.median(ranks) + 1) if len(ranks) else float("nan"),
        "MIA AUC": membership_auc(scan_.features, seed),
    }
