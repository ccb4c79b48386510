"""Recommendation quality: full-ranking NDCG@K, HR@K, Recall@K, and the sampled 1+99 protocol (SPEC section 3).

Full ranking scores a batch of users against every item in one matrix product, sets already-seen items to −inf,
sorts, and reads the metrics off the boolean hit matrix. Ties are broken by the lower item index (stable sort),
so results are exactly reproducible. Users with no held-out items are left out of the averages (and counted).
Recall@K = hits / min(K, |held-out items|), so a perfect ranking scores 1 even when a user has more than K.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .data import Split
from .models import Scorer

DEFAULT_KS = (5, 10, 20)


@dataclass(frozen=True)
class RankingResult:
    """Mean metrics by name ('NDCG@10', …), the protocol, and how many users were evaluated."""

    metrics: dict[str, float]
    protocol: str  # "full" or "sampled 1+99"
    part: str  # "valid" or "test"
    n_users: int
    per_user: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def __getitem__(self, name: str) -> float:
        return self.metrics[name]

    def to_frame(self) -> pd.DataFrame:
        label = "full ranking" if self.protocol == "full" else f"sampled ({self.protocol})"
        return pd.DataFrame([{"protocol": label, "split": self.part, "users": self.n_users, **self.metrics}])


def _csr_rows_dense(matrix: sp.csr_matrix, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """Dense boolean rows of a CSR matrix on the device (batch × M)."""
    sub = matrix[rows]
    dense = torch.zeros(sub.shape, dtype=torch.bool, device=device)
    row_index = np.repeat(np.arange(sub.shape[0]), np.diff(sub.indptr))
    dense[torch.as_tensor(row_index, device=device), torch.as_tensor(sub.indices, device=device, dtype=torch.int64)] = True
    return dense


def ranking_metrics_from_scores(
    scores: torch.Tensor, targets: torch.Tensor, seen: torch.Tensor | None, ks: tuple[int, ...]
) -> dict[str, torch.Tensor]:
    """Per-user NDCG/HR/Recall@K for a batch: scores (B×M), targets and seen as boolean masks (B×M)."""
    scores = scores.float().clone()
    if seen is not None:
        scores[seen] = float("-inf")  # a seen item is never recommended
    n_items = scores.shape[1]
    k_max = min(max(ks), n_items)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k_max]
    hits = torch.gather(targets, 1, order)
    if seen is not None:
        hits = hits & ~torch.gather(seen, 1, order)
    hits = hits.float()
    n_targets = targets.sum(1).float()
    discounts = 1.0 / torch.log2(torch.arange(k_max, device=scores.device, dtype=torch.float32) + 2.0)
    out: dict[str, torch.Tensor] = {}
    for k in ks:
        kk = min(k, n_items)
        dcg = (hits[:, :kk] * discounts[:kk]).sum(1)
        ideal_count = torch.clamp(n_targets, max=kk).long()
        ideal_cumulative = torch.cat([torch.zeros(1, device=scores.device), discounts[:kk].cumsum(0)])
        idcg = ideal_cumulative[ideal_count]
        n_hits = hits[:, :kk].sum(1)
        out[f"NDCG@{k}"] = torch.where(idcg > 0, dcg / idcg.clamp(min=1e-12), torch.zeros_like(dcg))
        out[f"HR@{k}"] = (n_hits > 0).float()
        out[f"Recall@{k}"] = n_hits / torch.clamp(n_targets, max=kk).clamp(min=1)
    return out


@torch.no_grad()
def evaluate_full(
    scorer: Scorer,
    split: Split,
    part: str = "test",
    ks: tuple[int, ...] = DEFAULT_KS,
    batch_size: int = 1024,
    device: torch.device | None = None,
) -> RankingResult:
    """Full-ranking metrics on `part` ('valid' or 'test'); training items (and validation items when scoring
    test) are masked so they are never counted as recommendations."""
    device = device or torch.device("cpu")
    targets_matrix = split.matrix(part)
    seen_matrix = split.train_matrix
    if part == "test":
        seen_matrix = (seen_matrix + split.matrix("valid")).tocsr()
    users = np.flatnonzero(np.diff(targets_matrix.indptr) > 0)
    collected: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        batch_tensor = torch.as_tensor(batch, device=device)
        scores = scorer(batch_tensor)
        per_user = ranking_metrics_from_scores(
            scores, _csr_rows_dense(targets_matrix, batch, scores.device), _csr_rows_dense(seen_matrix, batch, scores.device), ks
        )
        for name, values in per_user.items():
            collected.setdefault(name, []).append(values.cpu())
    arrays = {name: torch.cat(parts).numpy() for name, parts in collected.items()}
    means = {name: float(values.mean()) if len(values) else 0.0 for name, values in arrays.items()}
    return RankingResult(means, "full", part, len(users), arrays)


@torch.no_grad()
def evaluate_sampled(
    scorer: Scorer,
    split: Split,
    part: str = "test",
    ks: tuple[int, ...] = DEFAULT_KS,
    n_negatives: int = 99,
    seed: int = 0,
    batch_size: int = 1024,
    device: torch.device | None = None,
) -> RankingResult:
    """The sampled protocol: one held-out positive per user ranked against `n_negatives` items the user never
    interacted with. Only for comparison with papers that use it; not comparable to full ranking. Ties count
    against the positive (pessimistic), so a constant scorer cannot look good; a user who has seen every item is left
    out of `n_users`."""
    device = device or torch.device("cpu")
    rng = np.random.default_rng(seed)
    targets = getattr(split, part)
    # one positive per user: a seeded random choice among that user's held-out items
    order = np.lexsort((rng.random(len(targets)), targets[:, 0]))
    first = np.unique(targets[order, 0], return_index=True)[1]
    users, positives = targets[order][first, 0], targets[order][first, 1]
    everything = np.concatenate([split.train, split.valid, split.test])
    seen_keys = np.unique(everything[:, 0] * split.n_items + everything[:, 1])
    negatives = rng.integers(0, split.n_items, (len(users), n_negatives))
    clash = np.isin(users[:, None] * split.n_items + negatives, seen_keys)
    for _ in range(100):  # resample collisions with seen items, vectorised
        if not clash.any():
            break
        negatives[clash] = rng.integers(0, split.n_items, int(clash.sum()))
        clash = np.isin(users[:, None] * split.n_items + negatives, seen_keys)
    # a user who has seen nearly every item may keep a few draws on seen items: those are not negatives and never
    # count against the positive; a user who has seen every item has nothing to be ranked against and is left out
    # (counting them as hits would let a constant scorer look good)
    ranked = ~clash.all(1)
    users, positives, negatives, clash = users[ranked], positives[ranked], negatives[ranked], clash[ranked]
    valid = torch.as_tensor(~clash)
    ranks = []
    for start in range(0, len(users), batch_size):
        batch = torch.as_tensor(users[start : start + batch_size], device=device)
        scores = scorer(batch)
        pos = scores.gather(1, torch.as_tensor(positives[start : start + batch_size, None], device=scores.device))
        neg = scores.gather(1, torch.as_tensor(negatives[start : start + batch_size], device=scores.device))
        ranks.append(((neg >= pos) & valid[start : start + batch_size].to(scores.device)).sum(1).cpu())
    rank = torch.cat(ranks).numpy() if ranks else np.zeros(0)
    per_user: dict[str, np.ndarray] = {}
    for k in ks:
        hit = rank < k
        per_user[f"NDCG@{k}"] = np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0)
        per_user[f"HR@{k}"] = hit.astype(float)
    means = {name: float(values.mean()) if len(values) else 0.0 for name, values in per_user.items()}
    return RankingResult(means, f"sampled 1+{n_negatives}", part, len(users), per_user)


@torch.no_grad()
def top_k_items(scorer: Scorer, split: Split, k: int = 20, batch_size: int = 1024,
                device: torch.device | None = None) -> np.ndarray:
    """Each user's top-k item indices with training and validation items masked (N × k); for top-k overlap."""
    device = device or torch.device("cpu")
    seen_matrix = (split.train_matrix + split.matrix("valid")).tocsr()
    out = []
    for start in range(0, split.n_users, batch_size):
        batch = np.arange(start, min(start + batch_size, split.n_users))
        scores = scorer(torch.as_tensor(batch, device=device)).float().clone()
        scores[_csr_rows_dense(seen_matrix, batch, scores.device)] = float("-inf")
        out.append(torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k].cpu())
    return torch.cat(out).numpy()
