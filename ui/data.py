"""The Model page's data sources: the built-in demo, a MovieLens-100K folder, or uploaded CSVs."""
from __future__ import annotations

from pathlib import Path

from core.data import MIN_INTERACTIONS, DataError, InteractionDataset, load_dataset, load_interactions_csv

DEMO = "Built-in demo"
MOVIELENS = "MovieLens-100K folder"
UPLOAD = "Upload interactions CSV"
DATA_SOURCES = (DEMO, MOVIELENS, UPLOAD)


def load_source(source: str, folder: str = "", interactions: tuple[str, bytes] | None = None,
                attributes: tuple[str, bytes] | None = None, threshold: float | None = None,
                k: int = MIN_INTERACTIONS) -> InteractionDataset:
    """Turn the Model page's data choice (and its k-core threshold) into a dataset; raises DataError with a
    message for the user."""
    if source == DEMO:
        return load_dataset("synthetic", k=k)
    if source == MOVIELENS:
        if not folder or not (Path(folder) / "u.data").exists():
            raise DataError(f"{folder or 'no folder given'}: expected a MovieLens-100K folder containing u.data "
                            "and u.user (download it from grouplens.org/datasets/movielens/100k)")
        return load_dataset(f"ml-100k:{folder}", rating_threshold=threshold, k=k)
    if interactions is None:
        raise DataError("upload an interactions CSV (columns user, item, optionally rating and timestamp) first")
    name, raw = interactions
    attr_raw, attr_name = (attributes[1], attributes[0]) if attributes else (None, None)
    return load_interactions_csv(raw, attr_raw, name=Path(name).stem, rating_threshold=threshold, k=k,
                                 file_label=name, attributes_label=attr_name)
