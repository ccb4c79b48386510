"""Updated models saved like trained ones (weights.safetensors + model.json, no pickle), so that `load_model`, the
Model page and the Audit page take them as they are. model.json records what deleted what (method, parameters,
cost, how many interactions, never which ones: the forgotten ids are personal data and are not kept). The weights
hold the graph the model now propagates over (LightGCN), which loading keeps; a LightUL-style model's Ω is baked
into its tables and also saved as omega.safetensors; a sharded model's assignment is saved as shards.json.
"""
from __future__ import annotations

import os
from pathlib import Path

from safetensors.torch import save_file

from ...checkpoint import FORMAT_VERSION, META_FILE, WEIGHTS_FILE
from ...data import InteractionDataset
from ...models import Recommender
from .base import DeletionResult
from .request import ForgetRequest
from .sisa import save_shards

OMEGA_FILE = "omega.safetensors"


def model_meta(model: Recommender, dataset: InteractionDataset, split_seed: int = 0, spec: str | None = None,
               rating_threshold: float | None = None) -> dict:
    """model.json's fields for a model that was not loaded from a folder (the app's trained model)."""
    return {"format_version": FORMAT_VERSION, "model": model.kind, "config": model.config(),
            "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint, "n_users": dataset.n_users,
                        "n_items": dataset.n_items, "user_ids": dataset.user_ids.tolist(),
                        "item_ids": dataset.item_ids.tolist(), "spec": spec, "rating_threshold": rating_threshold},
            "split_seed": split_seed}


def save_deleted_model(folder: str | os.PathLike, result: DeletionResult, meta: dict, request: ForgetRequest,
                       test_metrics: dict | None = None) -> Path:
    """Write the updated model of `result` into `folder`, loadable like a trained one."""
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = result.model
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(folder / WEIGHTS_FILE))
    if "omega" in result.extra:
        save_file({k: v.contiguous() for k, v in result.extra["omega"].items()}, str(folder / OMEGA_FILE))
    if "shards" in result.extra:
        save_shards(folder, result.extra["shards"])
    updated = {**meta, "model": model.kind, "config": model.config()}
    if test_metrics is not None:
        updated["metrics"] = {"test": test_metrics}
    updated["deletion"] = {
        "method": result.method, "label": result.label, "params": result.params, "seconds": result.seconds,
        "device": result.device, "notes": result.notes, "request": request.description,
        "forgotten_interactions": request.n_pairs,
        "graph": "the weights hold the graph of retained interactions; loading keeps it",
    }
    (folder / META_FILE).write_text(json.dumps(updated, indent=1, default=str))
    return folder
