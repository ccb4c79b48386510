"""Training a recommender with BPR, early stopping on validation NDCG@20 (never on test: SPEC section 1)."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .data import Split
from .device import canonical, describe, deterministic_algorithms, seed_everything, torch_generator
from .metrics import RankingResult, evaluate_full
from .models import Recommender, build_model
from .progress import Progress



@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters; the defaults train all three models well on MovieLens-100K and the demo."""

    dim: int = 64
    lr: float = 5e-3
    l2: float = 1e-4
    batch_size: int = 2048
    max_epochs: int = 200
    patience: int = 10  # epochs without a better validation NDCG@20 before stopping
    eval_every: int = 1
    seed: int = 0
    n_layers: int = 3  # LightGCN only


DEFAULT_LR = {"bpr": 5e-3, "neumf": 2e-3, "lightgcn": 5e-3}


@dataclass(frozen=True)
class TrainResult:
    """A trained model (best validation epoch), its history and its validation and test metrics."""

    model: Recommender
    config: TrainConfig
    history: list[dict[str, float]] = field(repr=False)
    best_epoch: int
    epochs_run: int
    seconds: float
    device: str
    valid: RankingResult
    test: RankingResult


def sample_negatives(
    positives: np.ndarray, n_items: int, train_csr, generator: np.random.Generator, max_tries: int = 20
) -> np.ndarray:
    """One uniform negative per (user, item) pair, resampled (vectorised) while it hits a training item."""
    users = positives[:, 0]
    negatives = generator.integers(0, n_items, len(users))
    for _ in range(max_tries):
        clash = np.asarray(train_csr[users, negatives]).ravel() > 0
        if not clash.any():
            break
        negatives[clash] = generator.integers(0, n_items, int(clash.sum()))
    return negatives


def train_model(
    kind: str,
    split: Split,
    config: TrainConfig | None = None,
    progress: Progress | None = None,
    device: torch.device | str = "cpu",
    loss_hook: Callable[[Recommender, torch.Tensor], torch.Tensor] | None = None,
    extra_parameters: list[torch.nn.Parameter | dict] | None = None,
) -> TrainResult:
    """Train a registered model on `split.train` with BPR and Adam; keep the weights of the best validation
    NDCG@20 and report validation and test metrics for them.

    `loss_hook(model, users)` adds a term to each batch's loss and `extra_parameters` (an adversary's, say) are
    optimised alongside (a parameter, or an Adam parameter group dict with its own lr): the in-training
    unlearning baselines use both.
    """
    config = config or TrainConfig(lr=DEFAULT_LR.get(kind, 5e-3))
    device = canonical(device)
    seed_everything(config.seed)
    model = build_model(
        kind, split.n_users, split.n_items, train_pairs=split.train, dim=config.dim, l2=config.l2, seed=config.seed,
        **({"n_layers": config.n_layers} if kind == "lightgcn" else {}),
    ).to(device)
    return fit(model, split, config, progress, device, loss_hook, extra_parameters)


def fit(
    model: Recommender,
    split: Split,
    config: TrainConfig,
    progress: Progress | None = None,
    device: torch.device | None = None,
    loss_hook: Callable[[Recommender, torch.Tensor], torch.Tensor] | None = None,
    extra_parameters: list[torch.nn.Parameter | dict] | None = None,
) -> TrainResult:
    """Train an already-built model (fresh or warm-started) with early stopping; see `train_model`."""
    device = canonical(device) if device is not None else model.device
    with deterministic_algorithms(device):
        return _fit(model.to(device), split, config, progress, device, loss_hook, extra_parameters)


def _fit(model, split, config, progress, device, loss_hook, extra_parameters) -> TrainResult:
    rng = np.random.default_rng(config.seed)
    shuffle = torch_generator(config.seed)
    groups = [{"params": list(model.parameters())}]
    groups += [g if isinstance(g, dict) else {"params": [g]} for g in (extra_parameters or [])]
    optimizer = torch.optim.Adam(groups, lr=config.lr)
    train_csr = split.train_matrix
    pairs = split.train
    history: list[dict[str, float]] = []
    best_ndcg, best_epoch, best_state, stale = -1.0, 0, copy.deepcopy(model.state_dict()), 0
    start = time.perf_counter()
    epoch = 0
    for epoch in range(1, config.max_epochs + 1):
        model.train()
        negatives = torch.as_tensor(sample_negatives(pairs, split.n_items, train_csr, rng), device=device)
        order = torch.randperm(len(pairs), generator=shuffle).to(device)
        users_all = torch.as_tensor(pairs[:, 0], device=device)
        items_all = torch.as_tensor(pairs[:, 1], device=device)
        total, batches = 0.0, 0
        for batch_start in range(0, len(pairs), config.batch_size):
            index = order[batch_start : batch_start + config.batch_size]
            users = users_all[index]
            loss = model.bpr_loss(users, items_all[index], negatives[index])
            if loss_hook is not None:
                loss = loss + loss_hook(model, users)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            batches += 1
        record = {"epoch": epoch, "loss": total / max(1, batches)}
        if epoch % config.eval_every == 0 or epoch == config.max_epochs:
            model.eval()
            valid = evaluate_full(model.scorer(), split, "valid", ks=(20,), device=device)
            record["valid NDCG@20"] = valid["NDCG@20"]
            if valid["NDCG@20"] > best_ndcg:
                best_ndcg, best_epoch, stale = valid["NDCG@20"], epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += config.eval_every
        history.append(record)
        if progress is not None:
            progress(
                epoch / config.max_epochs,
                f"epoch {epoch}: loss {record['loss']:.4f}, valid NDCG@20 {record.get('valid NDCG@20', float('nan')):.4f}",
            )
        if stale >= config.patience:
            break
    seconds = time.perf_counter() - start
    model.load_state_dict(best_state)
    model.eval()
    if progress is not None:
        progress(1.0, f"done: best epoch {best_epoch}, valid NDCG@20 {best_ndcg:.4f}")
    scorer = model.scorer()
    return TrainResult(
        model=model,
        config=config,
        history=history,
        best_epoch=best_epoch,
        epochs_run=epoch,
        seconds=seconds,
        device=describe(device),
        valid=evaluate_full(scorer, split, "valid", device=device),
        test=evaluate_full(scorer, split, "test", device=device),
    )
