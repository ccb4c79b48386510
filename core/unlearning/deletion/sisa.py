"""Sharded retraining (SISA / RecEraser-style): users are split into K shards, one model per shard trained on its
users' interactions only; a user is scored by their shard's model; a request retrains only the shards it touches.

The shard assignment is fixed when the model is first trained and kept with it (`shards.json` in the model
folder). A model saved without one gets a seeded assignment derived from its seed (said so in the notes). The
shard models of untouched shards are what a sharded deployment would already hold: they are trained here on the
original data and their time is reported apart ("setup"), not counted as the request's cost. The aggregate is
written as one dot-product model whose tables hold the shards' served embeddings in separate blocks (K·d
dimensions: a user's row is non-zero only in their shard's block), so it saves, loads and scores like any BPR-MF.
Honest costs: each shard sees 1/K of the data, so accuracy drops; a request touching every shard costs a retrain.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ...data import DataError
from ...models import BPRMF, LightGCN
from ...params import hp
from ...progress import scaled
from ...training import train_model
from .base import DeletionMethod, training_config

SHARDS_FILE = "shards.json"


def derive_shards(n_users: int, n_shards: int, seed: int) -> np.ndarray:
    """A seeded, balanced random assignment of users to shards (user index → shard)."""
    rng = np.random.default_rng(seed)
    return (rng.permutation(n_users) % n_shards).astype(np.int64)


def save_shards(folder: str | os.PathLike, assignment: np.ndarray) -> Path:
    path = Path(folder) / SHARDS_FILE
    path.write_text(json.dumps({"n_shards": int(assignment.max()) + 1, "shard_of_user": assignment.tolist()}))
    return path


def load_shards(folder: str | os.PathLike, n_users: int) -> np.ndarray | None:
    """The shard assignment kept with a saved model, validated; None when the model has none."""
    path = Path(folder) / SHARDS_FILE
    if not path.exists():
        return None
    try:
        content = json.loads(path.read_text())
        assignment = np.asarray(content["shard_of_user"], dtype=np.int64)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise DataError(f"{path}: not a shard assignment ({error}); expected {{'shard_of_user': [...]}}") from error
    if assignment.shape != (n_users,) or assignment.min() < 0:
        raise DataError(f"{path}: {assignment.shape[0]} shard entries for a model of {n_users} users")
    return assignment


def served_tables(model) -> tuple[torch.Tensor, torch.Tensor]:
    """The user and item embeddings the dot product scores with (LightGCN: propagated)."""
    with torch.no_grad():
        if isinstance(model, LightGCN):
            return model.propagate(model.user_emb, model.item_emb)
        return model.user_emb.detach(), model.item_emb.detach()


@dataclass
class ShardedRetrain(DeletionMethod):
    name = "sisa"
    label = "Sharded retrain (SISA)"
    description = ("Users split into K shards fixed at training time, one model per shard; a request retrains only "
                   "the shards it touches. Cheap for few users, a full retrain when every shard is touched, and "
                   "every shard learns from 1/K of the data.")
    applies_to = ("bpr", "lightgcn")

    n_shards: int = hp(4, "shards (used only when the model has no saved assignment)", 2, 32)
    max_epochs: int = hp(0, "most epochs per shard (0 = as the model was trained)", 0, 500)

    def _unlearn(self, model, request, progress, device, train_config, shards):
        split, retained = request.split, request.retained_split
        note = "shard assignment kept with the model"
        if shards is None:
            shards = derive_shards(split.n_users, self.n_shards, model.seed)
            note = (f"the model had no shard assignment: a seeded one ({self.n_shards} shards, seed {model.seed}) "
                    "was derived now, so the 'original' sharded models are trained here too")
        n_shards = int(shards.max()) + 1
        config = training_config(model, train_config)
        if self.max_epochs:
            config = replace(config, max_epochs=self.max_epochs)
        touched = np.zeros(n_shards, dtype=bool)
        touched[np.unique(shards[request.pairs[:, 0]])] = True
        users_blocks, items_blocks, history = [], [], []
        request_seconds = setup_seconds = 0.0
        for s in range(n_shards):
            source = retained if touched[s] else split
            train, valid, test = (p[shards[p[:, 0]] == s] for p in (source.train, source.valid, source.test))
            part = replace(split, train=train, valid=valid, test=test)
            start = time.perf_counter()
            result = train_model(model.kind, part, config, device=device,
                                 progress=scaled(progress, s / n_shards, (s + 1) / n_shards, f"shard {s + 1}: "))
            elapsed = time.perf_counter() - start
            if touched[s]:
                request_seconds += elapsed
            else:
                setup_seconds += elapsed
            history += [{"shard": s, "retrained": bool(touched[s]), **h} for h in result.history]
            users, items = served_tables(result.model)
            mine = torch.as_tensor(shards == s, device=users.device)
            users_blocks.append(users * mine[:, None])
            items_blocks.append(items)
        aggregate = BPRMF(split.n_users, split.n_items, dim=config.dim * n_shards, l2=model.l2, seed=model.seed)
        with torch.no_grad():
            aggregate.user_emb.copy_(torch.cat(users_blocks, 1).cpu())
            aggregate.item_emb.copy_(torch.cat(items_blocks, 1).cpu())
        notes = (f"{int(touched.sum())} of {n_shards} shards retrained ({request_seconds:.1f} s); the "
                 f"{n_shards - int(touched.sum())} untouched shard models took {setup_seconds:.1f} s to build here "
                 f"(held already in a sharded deployment; not counted); {note}")
        return aggregate.to(device), history, notes, {"seconds": request_seconds, "shards": shards,
                                                      "setup_seconds": setup_seconds}
