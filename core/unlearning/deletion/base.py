"""What every deletion method shares: the result type, the base class and the training settings it reuses."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import ClassVar

import numpy as np
import torch

from ...data import DataError, Split
from ...device import canonical, describe, torch_generator
from ...models import Recommender
from ...progress import Progress
from ...training import DEFAULT_LR, TrainConfig
from .request import ForgetRequest


@dataclass(frozen=True)
class DeletionResult:
    """An updated model and what it cost: wall time of the update alone (evaluation excluded), the per-step
    history, the hyper-parameters that produced it and the device it ran on."""

    method: str
    label: str
    model: Recommender
    seconds: float
    history: list[dict] = field(repr=False)
    params: dict
    device: str
    notes: str = ""
    extra: dict = field(default_factory=dict, repr=False)  # method-specific (Ω's weights, shard assignment, ...)


@dataclass
class DeletionMethod:
    """Base class: the fields of a subclass are its hyper-parameters (see core.params.hp); one verb, `unlearn`."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    description: ClassVar[str] = ""
    applies_to: ClassVar[tuple[str, ...]] = ("bpr", "neumf", "lightgcn")

    @property
    def params(self) -> dict:
        return asdict(self)

    def applies(self, model: Recommender) -> bool:
        return model.kind in self.applies_to

    def unlearn(self, model: Recommender, split: Split, request: ForgetRequest, progress: Progress | None = None,
                device: torch.device | str = "cpu", train_config: TrainConfig | None = None,
                shards: np.ndarray | None = None) -> DeletionResult:
        """Make `model` forget `request` (drawn from `split`); the original model is left untouched."""
        if request.split is not split and request.split.dataset.fingerprint != split.dataset.fingerprint:
            raise DataError("the forget request was built for another dataset than the model's")
        if not self.applies(model):
            raise DataError(f"{self.label} does not apply to {model.label}; it applies to "
                            f"{', '.join(self.applies_to)}")
        device = canonical(device)
        start = time.perf_counter()
        updated, history, notes, extra = self._unlearn(model, request, progress, device, train_config, shards)
        seconds = extra.pop("seconds", time.perf_counter() - start)
        return DeletionResult(self.name, self.label, updated.eval(), seconds, history, self.params, describe(device),
                              notes, extra)

    def _unlearn(self, model, request, progress, device, train_config, shards):
        """(updated model, history, notes, extra); `extra['seconds']` overrides the measured time."""
        raise NotImplementedError


def training_config(model: Recommender, base: TrainConfig | None = None) -> TrainConfig:
    """The settings the model was trained with: `base` (model.json's train_config) when known, else the defaults
    with the model's own size, L2 and seed."""
    config = base or TrainConfig(lr=DEFAULT_LR.get(model.kind, 5e-3))
    return replace(config, dim=model.dim, l2=model.l2, seed=model.seed, n_layers=getattr(model, "n_layers", 3))



class NegativeSampler:
    """Uniform negatives that avoid the user's training items, drawn on the device: clashes are looked up in a
    dense user × item mask when it is small (≤ 64M entries), else in the sorted pair keys (vectorised either way)."""

    def __init__(self, train_pairs: np.ndarray, n_items: int, device: torch.device, seed: int = 0,
                 dense_limit: int = 64_000_000):
        self.n_items, self.device = n_items, canonical(device)
        keys = np.unique(train_pairs[:, 0].astype(np.int64) * n_items + train_pairs[:, 1])
        n_users = int(train_pairs[:, 0].max()) + 1 if len(train_pairs) else 1
        self.mask = None
        if n_users * n_items <= dense_limit:
            self.mask = torch.zeros(n_users * n_items, dtype=torch.bool, device=self.device)
            self.mask[torch.as_tensor(keys, device=self.device)] = True
        self.keys = torch.as_tensor(keys, device=self.device)
        self.generator = torch_generator(seed, self.device)

    def _seen(self, keys: torch.Tensor) -> torch.Tensor:
        if self.mask is not None:
            return self.mask[keys.clamp(max=len(self.mask) - 1)] & (keys < len(self.mask))
        return self.keys[torch.searchsorted(self.keys, keys).clamp(max=len(self.keys) - 1)] == keys

    def __call__(self, users: torch.Tensor, tries: int = 20) -> torch.Tensor:
        draw = lambda: torch.randint(0, self.n_items, users.shape, generator=self.generator,  # noqa: E731
                                     device=self.device)
        negatives = draw()
        for _ in range(tries):
            found = self._seen(users * self.n_items + negatives)
            if not bool(found.any()):
                break
            negatives = torch.where(found, draw(), negatives)
        return negatives
