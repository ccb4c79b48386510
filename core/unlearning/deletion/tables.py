"""The layer-0 tables (users × d', items × d') of every model and a differentiable pair score on them.

LightUL-style whitening and the influence update edit rows of these tables; `pair_scores` is the model's own
score written so gradients reach both tables, and `with_tables` writes edited tables back into a copy of the model,
so the saved model's `scorer()` (the one scoring function every number comes from) includes the edit.
"""
from __future__ import annotations

import copy

import torch

from ...models import BPRMF, LightGCN, NeuMF, Recommender


def layer0_tables(model: Recommender) -> tuple[torch.Tensor, torch.Tensor]:
    """Detached copies of the user and item tables (NeuMF: its GMF and MLP tables side by side)."""
    if isinstance(model, NeuMF):
        return (torch.cat([model.gmf_user, model.mlp_user], 1).detach().clone(),
                torch.cat([model.gmf_item, model.mlp_item], 1).detach().clone())
    if isinstance(model, (BPRMF, LightGCN)):
        return model.user_emb.detach().clone(), model.item_emb.detach().clone()
    raise TypeError(f"no layer-0 tables known for {type(model).__name__}")


def pair_scores(model: Recommender, users_table: torch.Tensor, items_table: torch.Tensor, users: torch.Tensor,
                items: torch.Tensor) -> torch.Tensor:
    """The model's score of each (user, item) pair with these tables, differentiable in both tables; equal to
    `model.scorer()` after `with_tables` (a test checks it)."""
    if isinstance(model, NeuMF):
        d = model.dim
        u, i = users_table[users], items_table[items]
        return model._pair_scores(u[:, :d], u[:, d:], i[:, :d], i[:, d:])
    if isinstance(model, LightGCN):
        users_table, items_table = model.propagate(users_table, items_table)
    return (users_table[users] * items_table[items]).sum(1)


@torch.no_grad()
def with_tables(model: Recommender, users_table: torch.Tensor, items_table: torch.Tensor) -> Recommender:
    """A copy of `model` whose layer-0 tables are the given ones (everything else, the graph included, kept)."""
    edited = copy_model(model)
    if isinstance(edited, NeuMF):
        d = edited.dim
        for parameter, value in ((edited.gmf_user, users_table[:, :d]), (edited.mlp_user, users_table[:, d:]),
                                 (edited.gmf_item, items_table[:, :d]), (edited.mlp_item, items_table[:, d:])):
            parameter.copy_(value)
    else:
        edited.user_emb.copy_(users_table)
        edited.item_emb.copy_(items_table)
    if isinstance(edited, LightGCN):
        edited.set_graph(edited.train_pairs)  # drop a cached adjacency (new tensors, same graph)
    return edited.eval()


@torch.no_grad()
def frozen_pair_scorer(model: Recommender, users_table: torch.Tensor, items_table: torch.Tensor):
    """`pair_scores` for fixed tables, without gradients, with LightGCN's propagation done once."""
    if isinstance(model, LightGCN):
        final_users, final_items = model.propagate(users_table, items_table)
        return lambda users, items: (final_users[users] * final_items[items]).sum(1)
    return lambda users, items: pair_scores(model, users_table, items_table, users, items)


def copy_model(model: Recommender) -> Recommender:
    """A deep copy of a model (LightGCN's copy rebuilds its cached sparse adjacency on first use)."""
    return copy.deepcopy(model)
