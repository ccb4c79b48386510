"""What every attribute-unlearning method shares: the result, the base class with its one verb, group codes,
the parameter-space regulariser and the function-space hinge."""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, ClassVar, Mapping

import numpy as np
import torch

from ...data import AttributeLabels, Split
from ...device import canonical, describe
from ...models import Recommender
from ...progress import Progress

if TYPE_CHECKING:
    from .lego import CalibrationCache

TARGET_GAP = 0.05  # default tolerance |AUC − 0.5|: the same number the audit's verdict uses


@dataclass(frozen=True)
class UnlearningResult:
    """An edited user table with what produced it: method, attributes, runtime, device, loss history."""

    method: str
    label: str
    table: torch.Tensor  # CPU float32, same shape as the input
    attributes: tuple[str, ...]
    seconds: float
    device: str
    loss_history: tuple[float, ...]
    params: dict
    model: Recommender | None = None  # set only by in-training baselines (a retrained model)
    notes: str = ""
    details: dict = field(default_factory=dict)  # method-specific facts (LEGO: weights, cache use, phase times)


@dataclass(frozen=True)
class GroupCodes:
    """One attribute's labels on the device: one-hot membership for the labelled users, zeros elsewhere."""

    name: str
    onehot: torch.Tensor  # N × C float
    n_classes: int
    codes: torch.Tensor  # N int64, −1 where the user has no label

    @property
    def labelled(self) -> torch.Tensor:
        return self.codes >= 0


def group_codes(labels: Mapping[str, AttributeLabels], n_users: int, device: torch.device) -> list[GroupCodes]:
    """Each attribute's labels as device tensors (one-hot and codes), checked against the table's row count."""
    out = []
    for name, attribute in labels.items():
        if len(attribute.mask) != n_users:
            raise ValueError(f"attribute {name!r} has labels for {len(attribute.mask)} users, the table has {n_users}")
        onehot = torch.zeros(n_users, attribute.n_classes, device=device)
        rows = torch.as_tensor(np.flatnonzero(attribute.mask), device=device)
        values = torch.tensor(attribute.codes, dtype=torch.int64, device=device)
        onehot[rows, values] = 1.0
        codes = torch.full((n_users,), -1, dtype=torch.int64, device=device)
        codes[rows] = values
        out.append(GroupCodes(name, onehot, attribute.n_classes, codes))
    return out


def regulariser(table: torch.Tensor, original: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """‖θ − θ*‖² as a per-user mean, divided by the total variance of θ* (dimensionless)."""
    return (table - original).pow(2).sum(1).mean() / scale


def total_variance(table: torch.Tensor) -> torch.Tensor:
    return (table - table.mean(0)).pow(2).sum(1).mean().clamp(min=1e-12)


def ranking_hinge(model: Recommender, table: torch.Tensor, users: torch.Tensor, top: torch.Tensor,
                  margin: torch.Tensor) -> torch.Tensor:
    """Function-space regulariser: a hinge keeping each user's original top-20 order, mean over users and ranks."""
    scores = model.scorer(table)(users).gather(1, top[users])
    return torch.relu(scores[:, 1:] - scores[:, :-1] + margin).mean()


def table_digest(table: torch.Tensor) -> str:
    return hashlib.sha1(table.detach().cpu().numpy().tobytes()).hexdigest()[:16]


def labels_digest(labels: AttributeLabels) -> str:
    return hashlib.sha1(labels.codes.tobytes() + labels.mask.tobytes()).hexdigest()[:16]


@dataclass(frozen=True)
class AttributeUnlearner:
    """Base: subclasses set the class attributes and implement `_run`."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs_model: ClassVar[bool] = False
    multi_attribute: ClassVar[bool] = True
    tradeoff_field: ClassVar[str | None] = None

    def fit_transform(self, table: torch.Tensor, labels: Mapping[str, AttributeLabels],
                      model: Recommender | None = None, split: Split | None = None,
                      progress: Progress | None = None, device: torch.device | str | None = None,
                      cache: "CalibrationCache | None" = None) -> UnlearningResult:
        """Edit `table` so the `labels` can no longer be inferred. Runs on `device` (default: the table's own);
        `cache` is the caller's LEGO-style calibration cache (ignored by other methods)."""
        if not labels:
            raise ValueError("choose at least one attribute to unlearn")
        if len(labels) > 1 and not self.multi_attribute:
            raise ValueError(f"{self.label} handles one attribute at a time; got {', '.join(labels)}")
        if self.needs_model and model is None:
            raise ValueError(f"{self.label} needs the recommender (it is not available for uploaded embeddings)")
        table = torch.as_tensor(table, dtype=torch.float32)
        device = canonical(device) if device is not None else table.device
        original = table.detach().to(device)
        if model is not None and model.device != device:
            raise ValueError(f"the model is on {model.device} but the unlearning runs on {device}; move one of them")
        context = RunContext(model, split, progress, device, cache)
        start = time.perf_counter()
        edited, history, extra = self._run(original, labels, context)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        params = {f.name: getattr(self, f.name) for f in fields(self)}
        return UnlearningResult(self.name, self.label, edited.detach().float().cpu(), tuple(labels), seconds,
                                describe(device), tuple(float(h) for h in history), params, **extra)

    def _run(self, original: torch.Tensor, labels: Mapping[str, AttributeLabels], context: RunContext):
        raise NotImplementedError


@dataclass(frozen=True)
class RunContext:
    """What a method's run may use besides the table and labels; all of it chosen by the caller."""

    model: Recommender | None
    split: Split | None
    progress: Progress | None
    device: torch.device
    cache: "CalibrationCache | None" = None
