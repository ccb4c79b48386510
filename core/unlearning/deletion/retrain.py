"""Retrain: train from scratch on the retained data with the model's own settings (the gold standard)."""
from __future__ import annotations

from dataclasses import dataclass, replace

from ...params import hp
from ...training import train_model
from .base import DeletionMethod, training_config


@dataclass
class Retrain(DeletionMethod):
    name = "retrain"
    label = "Retrain"
    description = ("Train from scratch on the retained interactions with the same settings and seed: the gold "
                   "standard every completeness figure is compared with, and the slowest.")

    max_epochs: int = hp(0, "most epochs (0 = as the model was trained); early stopping on validation", 0, 500)

    def _unlearn(self, model, request, progress, device, train_config, shards):
        config = training_config(model, train_config)
        if self.max_epochs:
            config = replace(config, max_epochs=self.max_epochs)
        result = train_model(model.kind, request.retained_split, config, progress=progress, device=device)
        notes = f"best epoch {result.best_epoch} of {result.epochs_run}"
        return result.model, result.history, notes, {"seconds": result.seconds}
