"""Fine-tune: warm-start from the trained model and train a few epochs on the retained data only."""
from __future__ import annotations

from dataclasses import dataclass, replace

from ...models import LightGCN
from ...params import hp
from ...training import fit
from .base import DeletionMethod, training_config
from .tables import copy_model


@dataclass
class FineTune(DeletionMethod):
    name = "finetune"
    label = "Fine-tune"
    description = ("Continue training the trained model for a few epochs on the retained interactions (LightGCN: "
                   "on the graph without the forgotten edges). Forgets only as far as the retained data pulls.")

    epochs: int = hp(5, "epochs on the retained data (the best validation epoch is kept)", 1, 100)
    lr_scale: float = hp(1.0, "learning rate relative to the model's training rate", 0.01, 10.0, log=True)

    def _unlearn(self, model, request, progress, device, train_config, shards):
        retained = request.retained_split
        config = training_config(model, train_config)
        config = replace(config, max_epochs=self.epochs, patience=self.epochs, lr=config.lr * self.lr_scale)
        warm = copy_model(model).to(device)
        if isinstance(warm, LightGCN):
            warm.set_graph(retained.train)
        result = fit(warm, retained, config, progress=progress, device=device)
        return result.model, result.history, f"best epoch {result.best_epoch} of {result.epochs_run}", \
            {"seconds": result.seconds}
