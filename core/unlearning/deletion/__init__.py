"""Data deletion (SPEC section 6): make a trained recommender forget interactions, users or items, and measure
how completely against retraining.

Every method is a dataclass whose fields are its hyper-parameters (with metadata the UI turns into widgets) and one
verb, `unlearn(model, split, request, progress=None, device=...) -> DeletionResult`. One registry, `DELETERS`:
a new method is one class and one line here.
"""
from __future__ import annotations

from ...params import HyperParameter, hyperparameters_of
from .base import DeletionMethod, DeletionResult
from .edge_drop import EdgeDrop
from .evaluation import DeletionReport, DeletionRow, Tolerance, evaluate_deletion, run_deletion, run_methods
from .finetune import FineTune
from .influence import InfluenceUpdate
from .lightul import LightULStyle
from .request import (
    ForgetRequest, random_interactions, random_users, read_request, request_for_items, request_for_pairs,
    request_for_users,
)
from .retrain import Retrain
from .reverse_bpr import ReverseBPR
from .sisa import ShardedRetrain, derive_shards, load_shards, save_shards

__all__ = ["DELETERS", "DeletionMethod", "DeletionReport", "DeletionResult", "DeletionRow", "ForgetRequest",
           "HyperParameter", "Tolerance", "derive_shards", "evaluate_deletion", "hyperparameters", "load_shards",
           "make_deleter", "random_interactions", "random_users", "read_request", "request_for_items",
           "request_for_pairs", "request_for_users", "run_deletion", "run_methods", "save_shards"]

DELETERS: dict[str, type[DeletionMethod]] = {
    cls.name: cls for cls in (Retrain, FineTune, ReverseBPR, LightULStyle, ShardedRetrain, InfluenceUpdate, EdgeDrop)
}


def make_deleter(name: str, **params) -> DeletionMethod:
    """The registered method `name` built with `params` (its hyper-parameters; the rest at their defaults)."""
    if name not in DELETERS:
        raise ValueError(f"unknown deletion method {name!r}; choose one of {', '.join(DELETERS)}")
    return DELETERS[name](**params)


def hyperparameters(name: str) -> list[HyperParameter]:
    """The method's hyper-parameters with defaults, help and ranges, for building widgets."""
    return hyperparameters_of(DELETERS[name])
