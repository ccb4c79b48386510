"""In-training baselines: retrain the recommender with an MMD term (InT-Retrain) or an adversary (Adv-InT)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ...params import hp
from .base import AttributeUnlearner, group_codes
from .mmd import multi_kernel_mmd

ADVERSARY_LR_FACTOR = 10.0  # Adv-InT's adversary learning rate relative to the recommender's

class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight):
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.weight * grad, None


@dataclass(frozen=True)
class InTrainingBase(AttributeUnlearner):
    """Shared by the in-training baselines: retrain the recommender from scratch with an extra loss term."""

    needs_model: ClassVar[bool] = True
    tradeoff_field: ClassVar[str | None] = "weight"
    weight: float = hp(1.0, "weight of the unlearning term in the training loss", 1e-3, 100.0, True)
    max_epochs: int = hp(100, "maximum training epochs (early stopping on validation)", 1, 300)
    seed: int = hp(0, "random seed")

    def _run(self, original, labels, context):
        model, split, progress, device = context.model, context.split, context.progress, context.device
        from ...training import DEFAULT_LR, TrainConfig, train_model

        if split is None:
            raise ValueError(f"{self.label} retrains the recommender and needs its training data (split)")
        groups = group_codes(labels, len(original), device)
        lr = DEFAULT_LR.get(model.kind, 5e-3)
        hook, extra = self._hook(groups, original.shape[1], device, lr)
        config = TrainConfig(dim=model.dim, lr=lr, max_epochs=self.max_epochs,
                             seed=self.seed, **({"n_layers": model.n_layers} if model.kind == "lightgcn" else {}))
        result = train_model(model.kind, split, config, progress=progress, device=device, loss_hook=hook,
                             extra_parameters=extra)
        return result.model.user_table(), [h["loss"] for h in result.history], {"model": result.model}


@dataclass(frozen=True)
class InTRetrain(InTrainingBase):
    """InT-Retrain: retrain with the groups' MMD (on each batch's users) added to the BPR loss."""

    name: ClassVar[str] = "int_retrain"
    label: ClassVar[str] = "InT-Retrain"
    description: ClassVar[str] = "Retrain the recommender with an MMD term in its loss: a full training run."

    def _hook(self, groups, dim, device, lr):
        def hook(model, users):
            users = users.unique()
            # null-corrected: the biased MMD on every batch over-corrects into a mirrored AUC near 0 under CV
            return self.weight * multi_kernel_mmd(model.user_rows(users), [g.onehot[users] for g in groups], True)
        return hook, []


@dataclass(frozen=True)
class AdvInT(InTrainingBase):
    """Adv-InT: retrain with an adversary (MLP d→16→C per attribute) behind a gradient-reversal layer."""

    name: ClassVar[str] = "adv_int"
    label: ClassVar[str] = "Adv-InT"
    description: ClassVar[str] = "Retrain the recommender against an adversary through gradient reversal."
    objective: str = hp("reversal", "'reversal': gradient reversal, the recommender maximises the adversary's loss "
                        "(SPEC); 'confusion': it pushes the adversary's predictions to the class prior",
                        choices=("reversal", "confusion"))

    def _hook(self, groups, dim, device, lr):
        with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the global generator
            torch.manual_seed(self.seed)
            adversaries = [torch.nn.Sequential(torch.nn.Linear(dim, 16), torch.nn.ReLU(),
                                               torch.nn.Linear(16, g.n_classes)).to(device) for g in groups]
        priors = [g.onehot.sum(0) / g.onehot.sum() for g in groups]

        def hook(model, users):
            users = users.unique()
            rows = model.user_rows(users)
            loss = 0.0
            for g, adversary, prior in zip(groups, adversaries, priors):
                known = g.onehot[users].sum(1) > 0
                if not known.any():
                    continue
                target = g.onehot[users][known].argmax(1)
                if self.objective == "reversal":
                    reversed_rows = _GradientReversal.apply(rows[known], self.weight)
                    loss = loss + torch.nn.functional.cross_entropy(adversary(reversed_rows), target)
                else:  # confusion: the adversary learns on detached rows; the recommender pushes it to the prior
                    loss = loss + torch.nn.functional.cross_entropy(adversary(rows[known].detach()), target)
                    log_p = torch.nn.functional.log_softmax(adversary(rows[known]), dim=1)
                    loss = loss - self.weight * (prior * log_p).sum(1).mean()
            return loss
        # the adversary learns ADVERSARY_LR_FACTOR times faster than the recommender, so it keeps up
        return hook, [{"params": [p for a in adversaries for p in a.parameters()], "lr": ADVERSARY_LR_FACTOR * lr}]
