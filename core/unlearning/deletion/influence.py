"""Influence-function update (IFRU-style): one damped Newton step on the affected embeddings.

With θ* trained on all pairs, removing the forgotten pairs F moves the optimum of the retained loss to about θ* + (H
+ λI)⁻¹ ∇L_F(θ*), where H is the Hessian of the retained BPR loss (with L2) in the affected users' and items'
layer-0 rows, and λ the damping without which the step explodes (H is not positive definite away from an exact
optimum). The system is solved by conjugate gradients on Hessian-vector products (double backward), never forming H;
past `max_pairs` retained pairs, the Hessian is estimated on a reweighted random sample of them. LightGCN: the loss
is taken on the graph without the forgotten edges, which the updated model keeps.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ...device import seed_everything
from ...models import LightGCN
from ...params import hp
from .base import DeletionMethod, NegativeSampler
from .tables import copy_model, layer0_tables, pair_scores, with_tables


@dataclass
class InfluenceUpdate(DeletionMethod):
    name = "influence"
    label = "Influence update (IFRU-style)"
    description = ("One Newton step on the affected users' and items' embeddings, solving (H + λI)p = ∇L_forgotten "
                   "with conjugate gradients on Hessian-vector products. Fast; an approximation that damping "
                   "keeps stable.")

    damping: float = hp(3.0, "λ added to the Hessian (larger = smaller, safer step)", 1e-3, 1e3, log=True)
    cg_steps: int = hp(30, "conjugate-gradient iterations", 1, 500)
    scale: float = hp(1.0, "multiplier on the Newton step", 0.0, 5.0)
    negatives: int = hp(2, "fixed negatives per positive pair in the loss", 1, 32)
    max_pairs: int = hp(20_000, "retained pairs the Hessian is estimated on (a reweighted sample past this)", 1000,
                        1_000_000, log=True)
    seed: int = hp(0, "random seed (negatives, the Hessian's sample)")

    def _unlearn(self, model, request, progress, device, train_config, shards):
        seed_everything(self.seed)
        retained = request.retained_split
        base = copy_model(model).to(device).requires_grad_(False)
        if isinstance(base, LightGCN):
            base.set_graph(retained.train)
        users_table, items_table = (t.to(device) for t in layer0_tables(base))
        rows_u = torch.as_tensor(request.affected_users, device=device)
        rows_i = torch.as_tensor(request.affected_items, device=device)
        sampler = NegativeSampler(request.split.train, retained.n_items, device, self.seed)
        touching = np.isin(retained.train[:, 0], request.affected_users) | np.isin(retained.train[:, 1],
                                                                                    request.affected_items)
        kept = retained.train[touching]
        weight = 1.0
        if len(kept) > self.max_pairs:  # an unbiased sample of the Hessian's pairs, reweighted
            generator = np.random.default_rng(self.seed)
            weight = len(kept) / self.max_pairs
            kept = kept[np.sort(generator.choice(len(kept), self.max_pairs, replace=False))]
        kept_pairs = self._with_negatives(kept, sampler, device)
        forgotten = self._with_negatives(request.pairs, sampler, device)
        l2 = model.l2

        def loss(params: list[torch.Tensor], pairs, weight: float = 1.0) -> torch.Tensor:
            users_now = users_table.index_put((rows_u,), params[0])
            items_now = items_table.index_put((rows_i,), params[1])
            users, positives, negatives = pairs
            if not len(users):
                return params[0].sum() * 0.0
            margin = (pair_scores(base, users_now, items_now, users, positives)
                      - pair_scores(base, users_now, items_now, users, negatives))
            regulariser = (users_now[users].pow(2).sum() + items_now[positives].pow(2).sum()
                           + items_now[negatives].pow(2).sum()) / self.negatives
            return weight * (-F.logsigmoid(margin).sum() / self.negatives + l2 * regulariser)

        theta = [users_table[rows_u].clone().requires_grad_(True), items_table[rows_i].clone().requires_grad_(True)]
        gradient = torch.autograd.grad(loss(theta, forgotten), theta)
        retained_gradient = torch.autograd.grad(loss(theta, kept_pairs, weight), theta, create_graph=True)

        def hvp(vector: list[torch.Tensor]) -> list[torch.Tensor]:
            dot = sum((g * v).sum() for g, v in zip(retained_gradient, vector))
            product = torch.autograd.grad(dot, theta, retain_graph=True)
            return [p.detach() + self.damping * v for p, v in zip(product, vector)]

        step, history = self._conjugate_gradients(hvp, [g.detach() for g in gradient], progress)
        with torch.no_grad():
            users_new = users_table.index_put((rows_u,), theta[0].detach() + self.scale * step[0])
            items_new = items_table.index_put((rows_i,), theta[1].detach() + self.scale * step[1])
        updated = with_tables(base, users_new, items_new).requires_grad_(True)
        size = float(torch.sqrt(sum(s.pow(2).sum() for s in step)))
        notes = (f"Newton step on {len(rows_u):,} user and {len(rows_i):,} item rows, ‖step‖ = {size:.3g}, "
                 f"CG residual {history[-1]['residual']:.3g}")
        return updated, history, notes, {}

    def _with_negatives(self, pairs: np.ndarray, sampler, device):
        repeated = torch.as_tensor(np.repeat(pairs, self.negatives, axis=0), device=device)
        return repeated[:, 0], repeated[:, 1], sampler(repeated[:, 0])

    def _conjugate_gradients(self, hvp, rhs: list[torch.Tensor], progress):
        """Solve A x = rhs for the symmetric operator `hvp` (A = H + λI), from x = 0."""
        x = [torch.zeros_like(r) for r in rhs]
        residual = [r.clone() for r in rhs]
        direction = [r.clone() for r in rhs]
        rho = sum((r * r).sum() for r in residual)
        norm0 = float(rho.sqrt()) or 1.0
        history = []
        for step in range(1, self.cg_steps + 1):
            product = hvp(direction)
            curvature = sum((d * p).sum() for d, p in zip(direction, product))
            if float(curvature) <= 0:  # negative curvature left by too little damping: stop where we are
                history.append({"step": step, "residual": float(rho.sqrt()) / norm0, "stopped": "negative curvature"})
                break
            alpha = rho / curvature
            x = [xi + alpha * d for xi, d in zip(x, direction)]
            residual = [r - alpha * p for r, p in zip(residual, product)]
            rho_new = sum((r * r).sum() for r in residual)
            history.append({"step": step, "residual": float(rho_new.sqrt()) / norm0})
            if progress is not None:
                progress(step / self.cg_steps, f"CG step {step}: relative residual {history[-1]['residual']:.2e}")
            if float(rho_new.sqrt()) / norm0 < 1e-6:
                break
            direction = [r + (rho_new / rho) * d for r, d in zip(residual, direction)]
            rho = rho_new
        return x, history
