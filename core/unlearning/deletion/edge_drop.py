"""LightGCN edge drop: keep every weight and drop the forgotten edges from the propagation graph (free)."""
from __future__ import annotations

from dataclasses import dataclass

from .base import DeletionMethod
from .tables import copy_model


@dataclass
class EdgeDrop(DeletionMethod):
    name = "edge_drop"
    label = "Edge drop (LightGCN)"
    description = ("Keep LightGCN's weights and propagate over the graph without the forgotten edges: the free "
                   "baseline. The layer-0 embeddings still carry what training put in them.")
    applies_to = ("lightgcn",)

    def _unlearn(self, model, request, progress, device, train_config, shards):
        updated = copy_model(model).to(device)
        updated.set_graph(request.retained_split.train)
        updated.adjacency()  # build the new graph now, so its cost is counted
        if progress is not None:
            progress(1.0, f"dropped {request.n_pairs:,} edges")
        return updated, [], f"{request.n_pairs:,} edges dropped, weights unchanged", {}
