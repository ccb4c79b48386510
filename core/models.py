"""Recommenders in torch (BPR-MF, NeuMF, LightGCN) behind one interface and one registry.

The interface is what the rest of the product needs from a model:
- `bpr_loss(users, pos, neg)`: the training objective on a batch of (user, positive, negative) triples;
- `user_table()`: the editable user parameters (what attribute unlearning changes);
- `representations(user_table)`: every user representation an attacker could see, by name;
- `scorer(user_table)`: a function scoring all items for a batch of users, optionally with an edited table, so
  quality after unlearning is measured by the very same scoring function as before (SPEC section 3).
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Scorer = Callable[[torch.Tensor], torch.Tensor]


class Recommender(nn.Module):
    """Base class; subclasses set `kind` and implement the four methods of the interface."""

    kind: ClassVar[str] = ""
    label: ClassVar[str] = ""

    def __init__(self, n_users: int, n_items: int, dim: int = 64, l2: float = 1e-4, seed: int = 0):
        super().__init__()
        self.n_users, self.n_items, self.dim, self.l2, self.seed = n_users, n_items, dim, l2, seed

    def config(self) -> dict:
        """Constructor arguments, saved with the weights so a model can be rebuilt exactly."""
        return {"n_users": self.n_users, "n_items": self.n_items, "dim": self.dim, "l2": self.l2, "seed": self.seed}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def bpr_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def user_table(self) -> torch.Tensor:
        """A detached copy of the editable user parameters (N × d')."""
        raise NotImplementedError

    def user_rows(self, users: torch.Tensor) -> torch.Tensor:
        """The editable table's rows for `users`, differentiable (for in-training unlearning terms)."""
        raise NotImplementedError

    def representations(self, user_table: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Every user representation an attacker could see, by name; the first is the editable table."""
        raise NotImplementedError

    @torch.no_grad()
    def set_user_table(self, user_table: torch.Tensor) -> None:
        """Replace the editable user parameters with an (edited) table of the same shape."""
        table = self._check_table(user_table)
        for parameter, part in zip(self._user_parameters(), table.split([p.shape[1] for p in self._user_parameters()], 1)):
            parameter.copy_(part)

    def _user_parameters(self) -> list[torch.nn.Parameter]:
        return [self.user_emb]

    def derived_representations(self, user_table: torch.Tensor) -> dict[str, torch.Tensor]:
        """Representations computed from the table that are not slices of it (LightGCN: propagated), differentiable
        in `user_table`, so attribute unlearning can clean what is served as well as what is stored."""
        return {}

    def scorer(self, user_table: torch.Tensor | None = None) -> Scorer:
        """Score all items for a batch of user indices (B × M). The model's own parameters are detached, so
        gradients flow only into an edited `user_table` (the function-space regulariser needs that)."""
        raise NotImplementedError

    def _check_table(self, user_table: torch.Tensor | None) -> torch.Tensor | None:
        if user_table is None:
            return None
        expected = tuple(self.user_table().shape)
        if tuple(user_table.shape) != expected:
            raise ValueError(f"edited user table has shape {tuple(user_table.shape)}, the model expects {expected}")
        return user_table.to(self.device, torch.float32)


def _init_table(n: int, dim: int, generator: torch.Generator) -> nn.Parameter:
    return nn.Parameter(torch.randn(n, dim, generator=generator) * 0.1)


def _bpr(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    return -F.logsigmoid(pos_scores - neg_scores).mean()


class BPRMF(Recommender):
    """Matrix factorisation trained with BPR: score = ⟨e_u, e_i⟩."""

    kind = "bpr"
    label = "BPR-MF"

    def __init__(self, n_users: int, n_items: int, dim: int = 64, l2: float = 1e-4, seed: int = 0):
        super().__init__(n_users, n_items, dim, l2, seed)
        generator = torch.Generator().manual_seed(seed)
        self.user_emb = _init_table(n_users, dim, generator)
        self.item_emb = _init_table(n_items, dim, generator)

    def bpr_loss(self, users, pos, neg):
        u, i, j = self.user_emb[users], self.item_emb[pos], self.item_emb[neg]
        reg = (u.pow(2).sum() + i.pow(2).sum() + j.pow(2).sum()) / len(users)
        return _bpr((u * i).sum(1), (u * j).sum(1)) + self.l2 * reg

    def user_table(self):
        return self.user_emb.detach().clone()

    def user_rows(self, users):
        return self.user_emb[users]

    def representations(self, user_table=None):
        table = self._check_table(user_table)
        return {"user": (self.user_emb if table is None else table).detach()}

    def scorer(self, user_table=None):
        users_table = self._check_table(user_table)
        users_table = self.user_emb.detach() if users_table is None else users_table
        items_table = self.item_emb.detach()
        return lambda users: users_table[users] @ items_table.T


class NeuMF(Recommender):
    """NeuMF: a GMF branch and an MLP branch with their own user and item tables, trained with BPR.

    The reference code audits and edits only the GMF user table, which leaves the MLP table leaking; here the
    user representation is both tables side by side, and unlearning edits both (SPEC section 2).
    """

    kind = "neumf"
    label = "NeuMF"

    def __init__(self, n_users: int, n_items: int, dim: int = 64, l2: float = 1e-4, seed: int = 0):
        super().__init__(n_users, n_items, dim, l2, seed)
        generator = torch.Generator().manual_seed(seed)
        self.gmf_user = _init_table(n_users, dim, generator)
        self.gmf_item = _init_table(n_items, dim, generator)
        self.mlp_user = _init_table(n_users, dim, generator)
        self.mlp_item = _init_table(n_items, dim, generator)
        torch.manual_seed(seed)
        self.mlp = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, dim // 2), nn.ReLU())
        self.out = nn.Linear(dim + dim // 2, 1)

    def _pair_scores(self, gmf_u, mlp_u, gmf_i, mlp_i) -> torch.Tensor:
        gmf = gmf_u * gmf_i
        mlp = self.mlp(torch.cat([mlp_u, mlp_i], dim=-1))
        return self.out(torch.cat([gmf, mlp], dim=-1)).squeeze(-1)

    def bpr_loss(self, users, pos, neg):
        gu, mu = self.gmf_user[users], self.mlp_user[users]
        gi, mi, gj, mj = self.gmf_item[pos], self.mlp_item[pos], self.gmf_item[neg], self.mlp_item[neg]
        reg = sum(t.pow(2).sum() for t in (gu, mu, gi, mi, gj, mj)) / len(users)
        return _bpr(self._pair_scores(gu, mu, gi, mi), self._pair_scores(gu, mu, gj, mj)) + self.l2 * reg

    def user_table(self):
        return torch.cat([self.gmf_user, self.mlp_user], dim=1).detach().clone()

    def _user_parameters(self):
        return [self.gmf_user, self.mlp_user]

    def user_rows(self, users):
        return torch.cat([self.gmf_user[users], self.mlp_user[users]], dim=1)

    def representations(self, user_table=None):
        table = self._check_table(user_table)
        table = self.user_table() if table is None else table
        return {"gmf+mlp": table, "gmf": table[:, : self.dim], "mlp": table[:, self.dim :]}

    def scorer(self, user_table=None, item_chunk: int = 2048):
        table = self._check_table(user_table)
        table = self.user_table() if table is None else table
        gmf_users, mlp_users = table[:, : self.dim], table[:, self.dim :]
        gmf_items, mlp_items = self.gmf_item.detach(), self.mlp_item.detach()
        # the first MLP layer is linear in concat(user, item): split it into a user part and an item part once,
        # instead of running it on every (user, item) pair
        weight, bias = self.mlp[0].weight.detach(), self.mlp[0].bias.detach()
        rest = copy.deepcopy(self.mlp[1:]).requires_grad_(False)
        user_part = mlp_users @ weight[:, : self.dim].T + bias
        item_part = mlp_items @ weight[:, self.dim :].T
        out_weight, out_bias = self.out.weight.detach()[0], self.out.bias.detach()
        out_gmf, out_mlp = out_weight[: self.dim], out_weight[self.dim :]

        def score(users: torch.Tensor) -> torch.Tensor:
            gmf = (gmf_users[users] * out_gmf) @ gmf_items.T  # ⟨w_gmf, u ⊙ i⟩ for all items at once
            parts = []
            for start in range(0, self.n_items, item_chunk):  # bounds memory at batch × chunk × d
                hidden = rest(user_part[users][:, None, :] + item_part[start : start + item_chunk][None])
                parts.append(hidden @ out_mlp)
            return gmf + torch.cat(parts, dim=1) + out_bias

        return score


class LightGCN(Recommender):
    """LightGCN: embeddings propagated over the symmetric-normalised user-item graph, averaged over layers 0..L.

    Two user representations exist: layer 0 (the parameters, what unlearning edits) and the propagated one (what
    scoring uses, and what a leaked serving cache would contain); both are exposed.
    """

    kind = "lightgcn"
    label = "LightGCN"

    def __init__(
        self, n_users: int, n_items: int, dim: int = 64, l2: float = 1e-4, seed: int = 0, n_layers: int = 3,
        train_pairs: np.ndarray | torch.Tensor | None = None,
    ):
        super().__init__(n_users, n_items, dim, l2, seed)
        self.n_layers = n_layers
        generator = torch.Generator().manual_seed(seed)
        self.user_emb = _init_table(n_users, dim, generator)
        self.item_emb = _init_table(n_items, dim, generator)
        self.register_buffer("train_pairs", torch.zeros((0, 2), dtype=torch.int64))
        self._adjacency: torch.Tensor | None = None
        if train_pairs is not None:
            self.set_graph(train_pairs)

    def config(self) -> dict:
        return {**super().config(), "n_layers": self.n_layers}

    def __getstate__(self) -> dict:
        """Copies (copy.deepcopy) leave the cached adjacency behind: torch cannot copy a sparse CSR tensor, and the
        copy rebuilds it from `train_pairs` on first use."""
        return {**self.__dict__, "_adjacency": None}

    def set_graph(self, train_pairs: np.ndarray | torch.Tensor) -> None:
        """Set the interaction graph used for propagation (also how a forgotten edge is dropped)."""
        if isinstance(train_pairs, torch.Tensor):  # possibly on the GPU already: no round trip through NumPy
            pairs = train_pairs.detach().to(torch.int64)
        else:
            pairs = torch.as_tensor(np.asarray(train_pairs), dtype=torch.int64)
        self.train_pairs = pairs.to(self.train_pairs.device)
        self._adjacency = None

    def adjacency(self) -> torch.Tensor:
        """D^-½ A D^-½ over the (users + items) bipartite graph, as a sparse CSR tensor, built once."""
        if self._adjacency is None or self._adjacency.device != self.user_emb.device:
            pairs = self.train_pairs.to(self.user_emb.device)
            users, items = pairs[:, 0], pairs[:, 1] + self.n_users
            rows = torch.cat([users, items])
            cols = torch.cat([items, users])
            size = self.n_users + self.n_items
            degree = torch.bincount(rows, minlength=size).float().clamp(min=1)
            values = degree[rows].rsqrt() * degree[cols].rsqrt()
            with warnings.catch_warnings():  # sparse CSR is 'beta' in torch but stable for matmul
                warnings.simplefilter("ignore", UserWarning)
                coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (size, size), check_invariants=True)
                self._adjacency = coo.coalesce().to_sparse_csr()
        return self._adjacency

    def propagate(self, user_layer0: torch.Tensor, item_layer0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean of layers 0..L of the propagation; returns (users, items)."""
        adjacency = self.adjacency()
        layer = torch.cat([user_layer0, item_layer0], dim=0)
        total = layer
        for _ in range(self.n_layers):
            layer = adjacency @ layer
            total = total + layer
        final = total / (self.n_layers + 1)
        return final[: self.n_users], final[self.n_users :]

    def bpr_loss(self, users, pos, neg):
        user_final, item_final = self.propagate(self.user_emb, self.item_emb)
        u, i, j = user_final[users], item_final[pos], item_final[neg]
        reg = (
            self.user_emb[users].pow(2).sum() + self.item_emb[pos].pow(2).sum() + self.item_emb[neg].pow(2).sum()
        ) / len(users)
        return _bpr((u * i).sum(1), (u * j).sum(1)) + self.l2 * reg

    def user_table(self):
        return self.user_emb.detach().clone()

    def user_rows(self, users):
        return self.user_emb[users]

    @torch.no_grad()
    def representations(self, user_table=None):
        table = self._check_table(user_table)
        table = self.user_emb.detach() if table is None else table
        return {"layer0": table, **self.derived_representations(table)}

    def derived_representations(self, user_table):
        return {"propagated": self.propagate(user_table, self.item_emb.detach())[0]}

    def scorer(self, user_table=None):
        table = self._check_table(user_table)
        table = self.user_emb.detach() if table is None else table
        user_final, item_final = self.propagate(table, self.item_emb.detach())
        return lambda users: user_final[users] @ item_final.T


SKIPPED_REPRESENTATIONS = ("gmf", "mlp")  # NeuMF's halves: audited together as "gmf+mlp"


def served_representations(model: Recommender | None, table: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every user representation the model serves with for this (edited) user table, by name: the table itself
    for uploaded embeddings (no model), LightGCN's layer 0 and propagated, NeuMF's two tables together."""
    if model is None:
        return {"user": table}
    return {n: t for n, t in model.representations(table).items() if n not in SKIPPED_REPRESENTATIONS}


MODELS: dict[str, type[Recommender]] = {cls.kind: cls for cls in (BPRMF, NeuMF, LightGCN)}


@dataclass(frozen=True)
class ModelInfo:
    kind: str
    label: str
    description: str


MODEL_INFO = {
    "bpr": ModelInfo("bpr", "BPR-MF", "Matrix factorisation with the BPR loss: fast, a strong baseline."),
    "neumf": ModelInfo("neumf", "NeuMF", "GMF and MLP branches, each with its own user table (both audited)."),
    "lightgcn": ModelInfo("lightgcn", "LightGCN", "Graph propagation over the interactions; layer-0 and propagated "
                          "user embeddings are both audited."),
}


def build_model(kind: str, n_users: int, n_items: int, train_pairs: np.ndarray | None = None, **config) -> Recommender:
    """Construct a registered model by name; LightGCN needs the training pairs for its graph."""
    if kind not in MODELS:
        raise ValueError(f"unknown model {kind!r}; choose one of {', '.join(MODELS)}")
    cls = MODELS[kind]
    if cls is LightGCN:
        return LightGCN(n_users, n_items, train_pairs=train_pairs, **config)
    return cls(n_users, n_items, **config)
