"""Saved models: a directory with `weights.safetensors` (no pickle) and `model.json` (type, sizes, dataset
fingerprint, id maps, metrics). Loading refuses weights that do not match the metadata or the dataset."""
from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .data import DataError, InteractionDataset
from .models import MODELS, LightGCN, Recommender, build_model
from .training import TrainResult

WEIGHTS_FILE = "weights.safetensors"
META_FILE = "model.json"
FORMAT_VERSION = 1


def save_model(folder: str | os.PathLike, result: TrainResult, dataset: InteractionDataset,
               spec: str | None = None, rating_threshold: float | None = None, split_seed: int = 0,
               kcore: int | None = None, split_mode: str | None = None) -> Path:
    """Write a trained model and the metadata needed to check it against a dataset later (and, with `spec`, to
    reload that dataset from the command line with the same k-core filter and the same split: 'file' for the
    interactions' own split column, 'random' for the seeded per-user split)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = result.model
    tensors = {name: value.detach().cpu().contiguous() for name, value in model.state_dict().items()}
    save_file(tensors, str(folder / WEIGHTS_FILE))
    meta = {
        "format_version": FORMAT_VERSION,
        "model": model.kind,
        "config": model.config(),
        "train_config": asdict(result.config),
        "dataset": {
            "name": dataset.name,
            "fingerprint": dataset.fingerprint,
            "n_users": dataset.n_users,
            "n_items": dataset.n_items,
            "user_ids": dataset.user_ids.tolist(),
            "item_ids": dataset.item_ids.tolist(),
            "spec": spec,
            "rating_threshold": rating_threshold,
            "kcore": kcore,
        },
        "split_seed": split_seed,
        "split_mode": split_mode or dataset.split_mode,
        "metrics": {"valid": result.valid.metrics, "test": result.test.metrics},
        "best_epoch": result.best_epoch,
        "train_seconds": result.seconds,
        "device": result.device,
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=1))
    return folder


def save_edited_model(folder: str | os.PathLike, model: Recommender, meta: dict, result) -> Path:
    """Write a copy of `model` with the edited user table of an attribute-unlearning `result`, loadable like any
    trained model; model.json records what edited it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    edited = copy.deepcopy(result.model or model)
    if result.model is None:
        edited.set_user_table(result.table)
    tensors = {name: value.detach().cpu().contiguous() for name, value in edited.state_dict().items()}
    save_file(tensors, str(folder / WEIGHTS_FILE))
    details = {k: v for k, v in result.details.items() if k != "log"}
    edited_meta = {**meta, "edited": {"method": result.method, "label": result.label, "params": result.params,
                                      "attributes": list(result.attributes), "notes": result.notes,
                                      "details": details, "seconds": result.seconds, "device": result.device}}
    (folder / META_FILE).write_text(json.dumps(edited_meta, indent=1, default=str))
    return folder


def read_metadata(folder: str | os.PathLike) -> dict:
    """The saved model's JSON metadata, validated for the fields that loading relies on."""
    path = Path(folder) / META_FILE
    if not path.exists():
        raise DataError(f"{folder}: no {META_FILE} here; is this a folder written by 'python -m core train'?")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{META_FILE}: not valid JSON ({error})") from error
    for key in ("model", "config", "dataset"):
        if key not in meta:
            raise DataError(f"{META_FILE}: missing the {key!r} entry")
    if meta["model"] not in MODELS:
        raise DataError(f"{META_FILE}: unknown model type {meta['model']!r}; expected one of {', '.join(MODELS)}")
    return meta


def load_model(
    folder: str | os.PathLike, dataset: InteractionDataset | None = None, train_pairs: np.ndarray | None = None,
    device: torch.device | str = "cpu",
) -> tuple[Recommender, dict]:
    """Rebuild a saved model. With `dataset`, refuse it unless the dataset's fingerprint matches the one it was
    trained on; every tensor's name and shape must match what the metadata's model type and sizes imply."""
    folder = Path(folder)
    meta = read_metadata(folder)
    saved = meta["dataset"]
    if dataset is not None and saved.get("fingerprint") != dataset.fingerprint:
        raise DataError(
            f"this model was trained on dataset {saved.get('name')!r} (fingerprint {saved.get('fingerprint')}, "
            f"{saved.get('n_users')} users, {saved.get('n_items')} items), not on the loaded {dataset.name!r} "
            f"(fingerprint {dataset.fingerprint}, {dataset.n_users} users, {dataset.n_items} items)"
        )
    weights_path = folder / WEIGHTS_FILE
    if not weights_path.exists():
        raise DataError(f"{folder}: {WEIGHTS_FILE} is missing")
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError) as error:
        raise DataError(f"{WEIGHTS_FILE}: not a readable safetensors file ({error})") from error
    config = dict(meta["config"])
    n_users, n_items = int(config.pop("n_users")), int(config.pop("n_items"))
    # a model that forgot interactions keeps its own (retained) graph: the dataset's split would put them back
    keep_saved_graph = train_pairs is None or "deletion" in meta
    pairs = tensors.get("train_pairs") if keep_saved_graph else torch.as_tensor(train_pairs)
    model = build_model(meta["model"], n_users, n_items, train_pairs=None, **config)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if isinstance(model, LightGCN) and pairs is not None:
        expected["train_pairs"] = tuple(pairs.shape)
    found = {name: tuple(t.shape) for name, t in tensors.items()}
    if expected != found:
        wrong = sorted(set(expected.items()) ^ set(found.items()))[:4]
        raise DataError(
            f"{WEIGHTS_FILE} does not match {META_FILE} ({meta['model']}, {n_users} users, {n_items} items): "
            f"mismatched tensors {wrong}"
        )
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise DataError(f"{WEIGHTS_FILE}: tensor {name!r} contains NaN or infinite values")
    if isinstance(model, LightGCN):
        model.set_graph(pairs)
    model.load_state_dict(tensors)
    if isinstance(model, LightGCN):
        model.set_graph(model.train_pairs)  # drop any adjacency cached before the graph was loaded
    return model.to(device).eval(), meta
