"""U2U-R: pull users of different groups together (gradient version and the exact closed form)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ...params import hp
from ...progress import report
from .base import TARGET_GAP, AttributeUnlearner, group_codes, regulariser, total_variance
from .target import TargetSearch

U2U_ALPHA_GRID = (10.0, 3.0, 1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001)  # weak to strong pull


def u2u_pair_term(table: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Mean of ‖θ_i − θ_j‖² over user pairs with different labels, without the N×N Laplacian:
    Σ_pairs = Σ_g (N − n_g) Σ_{i∈g}‖θ_i‖² − Σ_{g≠h} ⟨S_g, S_h⟩ (unordered pairs)."""
    counts = onehot.sum(0)
    n = counts.sum()
    squares = onehot.T @ table.pow(2).sum(1)  # per group Σ‖θ_i‖²
    sums = onehot.T @ table  # S_g
    total = sums.sum(0)
    cross = (sums * (total - sums)).sum()  # Σ_g ⟨S_g, S_tot − S_g⟩ = Σ_{g≠h} ⟨S_g, S_h⟩
    pairs = (counts * (n - counts)).sum() / 2
    return (((n - counts) * squares).sum() - cross) / pairs.clamp(min=1)


@dataclass(frozen=True)
class U2UR(AttributeUnlearner):
    """U2U-R by gradient descent: pull users of different groups together, stay close to θ*."""

    name: ClassVar[str] = "u2u_r"
    label: ClassVar[str] = "U2U-R (gradient)"
    description: ClassVar[str] = ("The paper's user-to-user method: minimise distances between users of different "
                                  "groups. Known failure: groups collapse onto points a non-linear attacker spots.")
    tradeoff_field: ClassVar[str | None] = "alpha"
    alpha: float = hp(0.1, "weight of ‖θ − θ*‖² (per user, relative to the table's variance)", 1e-3, 10.0, True)
    steps: int = hp(300, "optimisation steps", 10, 2000)
    lr: float = hp(0.05, "Adam step as a fraction of the embeddings' per-coordinate spread", 1e-3, 0.5, True)

    def _run(self, original, labels, context):
        progress, device = context.progress, context.device
        groups = group_codes(labels, len(original), device)
        scale = total_variance(original)
        spread = scale.sqrt() / np.sqrt(original.shape[1])
        table = original.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([table], lr=float(self.lr * spread))
        history = []
        for step in range(self.steps):
            pair = sum(u2u_pair_term(table, g.onehot) for g in groups) / scale
            loss = pair + self.alpha * regulariser(table, original, scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            history.append(float(loss.detach()))
            if step % 50 == 0:
                report(progress, step / self.steps, f"U2U-R step {step}: loss {history[-1]:.4f}")
        return table, history, {}


def u2u_closed_form(original: torch.Tensor, onehot: torch.Tensor, alpha: float) -> torch.Tensor:
    """Exact minimiser of pair_term/P + (α/N)‖θ − θ*‖² (the same objective as U2UR for one attribute).

    Per user i in group g, stationarity gives θ_i = ((S − S_g)/P + c θ*_i) / a_g with c = α/N and
    a_g = (n − n_g)/P + c; summing over each group gives S = S* and S_g = (c S*_g + n_g S*/P) / (n/P + c).
    O(N·d), no iteration. Unlabelled users keep θ*."""
    labelled = onehot.sum(1) > 0
    n_all = original.shape[0]
    counts = onehot.sum(0)
    n = counts.sum()
    pairs = (counts * (n - counts)).sum() / 2
    c = alpha / n_all
    # the pair term is scaled by the same 1/scale as the regulariser in U2UR, so the ratio (and optimum) match
    start_sums = onehot.T @ original
    start_total = start_sums.sum(0)
    b = n / pairs + c
    sums = (c * start_sums + counts[:, None] * start_total[None, :] / pairs) / b
    group_of = onehot.argmax(1)
    a = (n - counts) / pairs + c
    edited = ((start_total - sums)[group_of] / pairs + c * original) / a[group_of][:, None]
    return torch.where(labelled[:, None], edited, original)


@dataclass(frozen=True)
class U2URClosedForm(AttributeUnlearner):
    """U2U-R solved exactly: the parameter-space optimum in O(N·d), no iterations."""

    name: ClassVar[str] = "u2u_r_closed"
    label: ClassVar[str] = "U2U-R (closed form)"
    description: ClassVar[str] = "The exact optimum of U2U-R with the parameter-space regulariser, in milliseconds."
    multi_attribute: ClassVar[bool] = False
    tradeoff_field: ClassVar[str | None] = "alpha"
    alpha: float = hp(0.1, "weight of ‖θ − θ*‖² (per user, relative to the table's variance); the fixed strength "
                      "when target_gap = 0", 1e-3, 10.0, True)
    target_gap: float = hp(TARGET_GAP, "target |AUC − 0.5|: α is searched from weak (10) to strong (0.001) until the "
                           "probe and the full audit meet it; 0 = fixed α", 0.0, 0.2)
    seed: int = hp(0, "random seed (probe)")

    def _run(self, original, labels, context):
        (groups,) = group_codes(labels, len(original), context.device)
        # U2UR minimises pair/(P·scale) + α·mean‖θ−θ*‖²/scale: the scale cancels, the mean is (1/N)·Σ
        if self.target_gap <= 0:
            return u2u_closed_form(original, groups.onehot, self.alpha), [], {}
        search = TargetSearch(original, labels, context.model, context.device, self.target_gap, self.seed)
        search.start()
        chosen = None
        for i, alpha in enumerate(U2U_ALPHA_GRID):
            report(context.progress, i / len(U2U_ALPHA_GRID), f"U2U-R α = {alpha:g}")
            candidate = u2u_closed_form(original, groups.onehot, alpha)
            if search.within(search.probe(candidate, f"α = {alpha:g}")) and search.verify(candidate, f"α = {alpha:g}"):
                chosen = candidate
                break
        table, details, note = search.outcome(chosen)
        return table, [], {"notes": note, "details": details}
