"""Reverse-BPR (MMRecUn-style): gradient ascent on BPR for the forgotten pairs, ordinary BPR on the retained pairs
of the affected users, for a few epochs."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...device import deterministic_algorithms, seed_everything
from ...models import LightGCN
from ...params import hp
from ...training import sample_negatives
from .base import DeletionMethod
from .tables import copy_model


@dataclass
class ReverseBPR(DeletionMethod):
    name = "reverse_bpr"
    label = "Reverse-BPR"
    description = ("Gradient ascent on the BPR loss of the forgotten pairs plus ordinary BPR on the affected users' "
                   "retained pairs, every parameter trained, for a few epochs (MMRecUn-style).")

    epochs: int = hp(3, "passes over the affected users' retained pairs", 1, 50)
    ascent_weight: float = hp(0.5, "weight of the ascent on the forgotten pairs", 0.01, 10.0, log=True)
    lr: float = hp(1e-3, "Adam learning rate", 1e-5, 1e-1, log=True)
    batch_size: int = hp(1024, "pairs per step (retained and forgotten each)", 64, 8192)
    seed: int = hp(0, "random seed (negatives, order)")

    def _unlearn(self, model, request, progress, device, train_config, shards):
        retained = request.retained_split
        seed_everything(self.seed)
        rng = np.random.default_rng(self.seed)
        updated = copy_model(model).to(device).train()
        if isinstance(updated, LightGCN):
            updated.set_graph(retained.train)
        kept = retained.train[np.isin(retained.train[:, 0], request.affected_users)]
        forgotten = request.pairs
        optimizer = torch.optim.Adam(updated.parameters(), lr=self.lr)
        csr = request.split.train_matrix  # negatives avoid every item the user had, forgotten ones included
        n_steps = max(1, -(-max(len(kept), len(forgotten)) // self.batch_size))
        history = []
        with deterministic_algorithms(device):
            for epoch in range(1, self.epochs + 1):
                kept_order = rng.permutation(len(kept))
                forget_order = rng.permutation(len(forgotten))
                total = 0.0
                for step in range(n_steps):
                    loss = torch.zeros((), device=device)
                    if len(kept):
                        index = kept_order[np.arange(step * self.batch_size, (step + 1) * self.batch_size) % len(kept)]
                        loss = loss + self._bpr(updated, kept[index], csr, rng, device)
                    window = np.arange(step * self.batch_size, (step + 1) * self.batch_size)
                    index = forget_order[window % len(forgotten)]
                    loss = loss - self.ascent_weight * self._bpr(updated, forgotten[index], csr, rng, device)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total += float(loss.detach())
                history.append({"epoch": epoch, "loss": total / n_steps})
                if progress is not None:
                    progress(epoch / self.epochs, f"epoch {epoch}: loss {total / n_steps:.4f}")
        return updated, history, f"{len(kept):,} retained pairs of {len(request.affected_users):,} affected users", {}

    @staticmethod
    def _bpr(model, pairs, csr, rng, device) -> torch.Tensor:
        pairs = np.unique(pairs, axis=0)  # the cycled last batch may repeat pairs
        negatives = sample_negatives(pairs, csr.shape[1], csr, rng)
        users, items = (torch.as_tensor(pairs[:, c], device=device) for c in (0, 1))
        return model.bpr_loss(users, items, torch.as_tensor(negatives, device=device))
