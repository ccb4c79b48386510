"""Linear concept erasure (LEACE-style)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ...params import hp
from .base import AttributeUnlearner, group_codes
from .moments import match_groups, random_group_moments

def leace_eraser(x: torch.Tensor, indicators: torch.Tensor, tol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """LEACE (Belrose et al., 2023): x ↦ x − W⁺ P W (x − μ), W = Σ_xx^{-½}, P the projection onto the columns of
    W Σ_xz. Makes every class-conditional mean equal with the least change in the whitened norm.
    Returns (matrix E, mean μ) so that erase(x) = x − (x − μ) @ E.T."""
    mean = x.mean(0)
    centred = x - mean
    cov = centred.T @ centred / len(x)
    cross = centred.T @ (indicators - indicators.mean(0)) / len(x)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov.double())
    keep = eigenvalues > tol * eigenvalues.max()
    inv_sqrt = (eigenvectors[:, keep] / eigenvalues[keep].sqrt()) @ eigenvectors[:, keep].T
    sqrt = (eigenvectors[:, keep] * eigenvalues[keep].sqrt()) @ eigenvectors[:, keep].T
    whitened_cross = inv_sqrt @ cross.double()
    u, s, _ = torch.linalg.svd(whitened_cross, full_matrices=False)
    basis = u[:, s > tol * max(float(s.max()), 1e-30)]
    projection = basis @ basis.T
    return (sqrt @ projection @ inv_sqrt).float(), mean


@dataclass(frozen=True)
class LinearEraser(AttributeUnlearner):
    """LEACE-style linear concept erasure: closed form, several attributes at once (stacked one-hot indicators)."""

    name: ClassVar[str] = "leace"
    chance_level: bool = hp(True, "leave each group at a random group's mean instead of exactly the pooled one: an "
                            "exact in-sample erasure mirrors under cross-validation (logistic regression AUC ≈ 0.3)")
    seed: int = hp(0, "random seed (the random groups)")
    label: ClassVar[str] = "Linear eraser (LEACE-style)"
    description: ClassVar[str] = ("Closed-form least-squares concept erasure (LEACE): removes the linear signal, then "
                                  "leaves each group at a random group's mean (chance level, no mirror). Non-linear "
                                  "attackers may still read the rest. Milliseconds.")

    def _run(self, original, labels, context):
        groups = group_codes(labels, len(original), context.device)
        labelled = torch.stack([g.labelled for g in groups]).all(0)
        indicators = torch.cat([g.onehot for g in groups], dim=1)[labelled]
        eraser, mean = leace_eraser(original[labelled], indicators)
        erased = original - (original - mean) @ eraser.T
        if not self.chance_level:
            return erased, [], {"notes": "exact in-sample erasure: expect the cross-validated mirror (AUC below 0.5)"}
        # give every group the mean of a random group of its size (one shuffle per attribute), in the erased space
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        for g in groups:
            targets = random_group_moments(erased, g.codes, g.n_classes, generator)
            erased = match_groups(erased, g.codes, targets, covariance=False)
        return erased, [], {"notes": "erased, then each group given a random group's mean (chance level)"}
