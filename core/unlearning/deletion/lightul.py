"""LightUL-style whitening: small residual MLPs Ω_u, Ω_i (d → d/2 → d, identity at start) applied to the affected
users' and items' layer-0 rows only; only Ω trains.

A squared hinge pushes each forgotten pair's score below its original score and down to where the user's held-out
(validation) items score, the level a never-trained-on positive has (a whole forgotten user: the level of a random
pair), or below a retained item of the user (`target='retained'`, closer to the reference code, which over-forgets);
a BPR term on retained pairs touching affected users or items, plus an anchor keeping those pairs' scores at their
original values, keeps the ranking. After training, Ω is applied to those rows and the edited tables are written
into a copy of the model, so every score of the updated model, for accuracy and for completeness alike, has Ω
applied (the reference code scores completeness with Ω and accuracy without it; we never mix them). Ω's weights are
kept with the result and saved beside the model. Phantom users are not implemented.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...device import deterministic_algorithms, seed_everything, torch_generator
from ...models import LightGCN
from ...params import hp
from .base import DeletionMethod, NegativeSampler
from .tables import copy_model, frozen_pair_scorer, layer0_tables, pair_scores, with_tables


class Whitening(nn.Module):
    """x + W2 relu(W1 x + b1) + b2 with W2, b2 zero: the identity until it trains."""

    def __init__(self, dim: int, generator: torch.Generator):
        super().__init__()
        self.inner = nn.Linear(dim, max(1, dim // 2))
        self.outer = nn.Linear(max(1, dim // 2), dim)
        with torch.no_grad():
            bound = 1.0 / dim**0.5
            self.inner.weight.uniform_(-bound, bound, generator=generator)
            self.inner.bias.zero_()
            self.outer.weight.zero_()
            self.outer.bias.zero_()

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return rows + self.outer(torch.relu(self.inner(rows)))


def apply_omega(table: torch.Tensor, rows: torch.Tensor, omega: Whitening) -> torch.Tensor:
    """The table with Ω applied to `rows` (out of place, differentiable in Ω)."""
    return table.index_put((rows,), omega(table[rows]))


@dataclass
class LightULStyle(DeletionMethod):
    name = "lightul"
    label = "LightUL-style"
    description = ("Train small identity-initialised MLPs applied only to the affected users' and items' "
                   "embeddings so forgotten pairs score like never-seen positives, with BPR on retained pairs "
                   "keeping the ranking. Seconds, not minutes; Ω is applied in every score.")

    steps: int = hp(100, "Adam steps on Ω", 1, 2000)
    lr: float = hp(1e-2, "Adam learning rate for Ω", 1e-4, 1e-1, log=True)
    forget_weight: float = hp(1.0, "weight of the forgetting term against the retained terms", 0.01, 100.0,
                              log=True)
    anchor_weight: float = hp(5.0, "weight keeping retained pairs' scores at their original values", 0.0, 100.0)
    margin: float = hp(0.0, "extra margin below the target score", 0.0, 5.0)
    target: str = hp("held-out", "where forgotten scores are pushed: to the user's held-out items' level, or below "
                     "a retained item (over-forgets)", choices=("held-out", "retained"))
    batch_size: int = hp(2048, "retained pairs per step", 256, 65536)
    drop_edges: bool = hp(True, "LightGCN: also propagate over the graph without the forgotten edges")
    seed: int = hp(0, "random seed (Ω's start, sampling)")

    def _unlearn(self, model, request, progress, device, train_config, shards):
        seed_everything(self.seed)
        rng = np.random.default_rng(self.seed)
        model = copy_model(model).to(device).requires_grad_(False)  # the caller's model is left untouched
        original_tables = layer0_tables(model)
        base = with_tables(model, *original_tables)
        retained = request.retained_split
        if isinstance(base, LightGCN) and self.drop_edges:
            base.set_graph(retained.train)
        users_table, items_table = (t.clone() for t in original_tables)
        original_score = frozen_pair_scorer(model, *original_tables)
        affected_users = torch.as_tensor(request.affected_users, device=device)
        affected_items = torch.as_tensor(request.affected_items, device=device)
        generator = torch.Generator().manual_seed(self.seed)
        omega_u = Whitening(users_table.shape[1], generator).to(device)
        omega_i = Whitening(items_table.shape[1], generator).to(device)

        f_users, f_items = (torch.as_tensor(request.pairs[:, c], device=device) for c in (0, 1))
        touching = np.isin(retained.train[:, 0], request.affected_users) | np.isin(retained.train[:, 1],
                                                                                    request.affected_items)
        kept = torch.as_tensor(retained.train[touching], device=device)
        negatives_of = NegativeSampler(request.split.train, retained.n_items, device, self.seed)
        batch_generator = torch_generator(self.seed, device)
        with torch.no_grad():
            target = torch.minimum(self._target_scores(model, request, rng, device), original_score(f_users, f_items))

        optimizer = torch.optim.Adam(list(omega_u.parameters()) + list(omega_i.parameters()), lr=self.lr)
        history = []
        with deterministic_algorithms(device):
            for step in range(1, self.steps + 1):
                users_now = apply_omega(users_table, affected_users, omega_u)
                items_now = apply_omega(items_table, affected_items, omega_i)
                scores = pair_scores(base, users_now, items_now, f_users, f_items)
                # a squared hinge: pushes a forgotten pair down to its target and no further (no over-forgetting)
                forget = F.relu(scores - target + self.margin).pow(2).mean()
                keep = torch.zeros((), device=device)
                if len(kept):
                    chosen = kept[torch.randint(0, len(kept), (min(self.batch_size, len(kept)),),
                                                generator=batch_generator, device=device)]
                    users, items = chosen[:, 0], chosen[:, 1]
                    negatives = negatives_of(users)
                    positive = pair_scores(base, users_now, items_now, users, items)
                    negative = pair_scores(base, users_now, items_now, users, negatives)
                    with torch.no_grad():
                        anchor_positive = original_score(users, items)
                        anchor_negative = original_score(users, negatives)
                    keep = (-F.logsigmoid(positive - negative).mean() + self.anchor_weight * (
                        (positive - anchor_positive).pow(2).mean() + (negative - anchor_negative).pow(2).mean()))
                loss = self.forget_weight * forget + keep
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                history.append({"step": step, "loss": float(loss.detach()), "forget": float(forget.detach()),
                                "retained": float(keep.detach())})
                if progress is not None and (step % 10 == 0 or step == self.steps):
                    last = history[-1]
                    progress(step / self.steps,
                             f"step {step}: forget {last['forget']:.4f}, retained {last['retained']:.4f}")
        with torch.no_grad():
            updated = with_tables(base, apply_omega(users_table, affected_users, omega_u),
                                  apply_omega(items_table, affected_items, omega_i))
        omega = {f"omega_u.{k}": v.detach().cpu() for k, v in omega_u.state_dict().items()}
        omega |= {f"omega_i.{k}": v.detach().cpu() for k, v in omega_i.state_dict().items()}
        omega |= {"affected_users": affected_users.cpu(), "affected_items": affected_items.cpu()}
        notes = (f"Ω on {len(request.affected_users):,} users and {len(request.affected_items):,} items, applied to "
                 "their layer-0 rows in every score" + ("; forgotten edges dropped" if isinstance(base, LightGCN)
                                                        and self.drop_edges else ""))
        return updated, history, notes, {"omega": omega}

    def _target_scores(self, model, request, rng, device) -> torch.Tensor:
        """Per forgotten pair, the score it should fall to: the mean original score of the user's validation
        items (never trained on), or of one retained item; users without them get the population's value."""
        retained = request.retained_split
        scorer_tables = [t.to(device) for t in layer0_tables(model)]
        users = request.pairs[:, 0]
        reference = retained.valid if self.target == "held-out" else retained.train
        reference_scores = pair_scores(model, *scorer_tables, torch.as_tensor(reference[:, 0], device=device),
                                       torch.as_tensor(reference[:, 1], device=device))
        if self.target == "retained":  # one random retained item's score per forgotten pair
            starts = np.searchsorted(reference[:, 0], users)
            counts = np.searchsorted(reference[:, 0], users, side="right") - starts
            pick = starts + (rng.random(len(users)) * np.maximum(counts, 1)).astype(np.int64)
            fallback = float(reference_scores.median()) if len(reference) else 0.0
            pick = torch.as_tensor(pick.clip(max=max(0, len(reference) - 1)), device=device)
            return torch.where(torch.as_tensor(counts > 0, device=device), reference_scores[pick],
                               torch.tensor(fallback, device=device))
        n_users = request.split.n_users
        index = torch.as_tensor(reference[:, 0], device=device)
        sums = torch.zeros(n_users, device=device).index_add_(0, index, reference_scores)
        counts = torch.zeros(n_users, device=device).index_add_(0, index, torch.ones_like(reference_scores))
        overall = float(reference_scores.mean()) if len(reference) else 0.0
        per_user = torch.where(counts > 0, sums / counts.clamp(min=1), torch.tensor(overall, device=device))
        if len(request.users):  # a whole user forgotten looks, after retraining, like a user never trained: the
            # level of a random (user, item) pair
            random_users = torch.as_tensor(rng.integers(0, n_users, 4096), device=device)
            random_items = torch.as_tensor(rng.integers(0, request.split.n_items, 4096), device=device)
            per_user[torch.as_tensor(request.users, device=device)] = pair_scores(
                model, *scorer_tables, random_users, random_items).mean()
        return per_user[torch.as_tensor(users, device=device)]
