"""What the pages plot about embeddings: per-dimension distributions by group and a 2-D UMAP projection.

Computed here (not in page code) so the Audit and Unlearning pages and any report show the same thing.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .data import AttributeLabels


def separating_dimensions(table: np.ndarray, labels: AttributeLabels, k: int = 4) -> list[int]:
    """The k dimensions whose group means differ most (in pooled standard deviations): where leakage shows."""
    x = np.asarray(table, dtype=np.float64)[labels.mask]
    means = np.stack([x[labels.codes == c].mean(0) for c in range(labels.n_classes) if (labels.codes == c).any()])
    spread = (means.max(0) - means.min(0)) / (x.std(0) + 1e-12)
    return [int(i) for i in np.argsort(-spread)[:k]]


def group_values(table: np.ndarray, labels: AttributeLabels, dims: list[int], stage: str = "") -> pd.DataFrame:
    """Long-form frame (value, group, dimension[, stage]) for histograms of the chosen dimensions by group."""
    x = np.asarray(table)[labels.mask]
    groups = np.asarray(labels.classes, dtype=object)[labels.codes]
    frames = [pd.DataFrame({"value": x[:, d], "group": groups, "dimension": f"dim {d}"}) for d in dims]
    frame = pd.concat(frames, ignore_index=True)
    if stage:
        frame["stage"] = stage
    return frame


def umap_2d(table: np.ndarray, max_users: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded 2-D UMAP of at most `max_users` users (a seeded subsample); returns (coordinates, user indices)."""
    import umap  # imported lazily: it takes seconds and compiles on first use

    x = np.asarray(table, dtype=np.float32)
    rng = np.random.default_rng(seed)
    index = np.sort(rng.choice(len(x), size=min(max_users, len(x)), replace=False))
    reducer = umap.UMAP(n_components=2, n_neighbors=15, random_state=seed, n_jobs=1)
    return reducer.fit_transform(x[index]), index
