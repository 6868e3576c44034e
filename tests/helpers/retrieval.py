"""Independent answers for the retrieval tests: full distance matrices, and eagerly built tiny graphs."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial.distance import cdist

from tests.helpers.tiny_sections import tiny_graphs


def brute_force(queries, candidates, k, metric):
    """Full distance matrix, sorted by (distance, index)."""
    if metric == "l1":
        distances = cdist(queries, candidates, metric="cityblock")
    else:
        distances = cdist(queries.astype(np.float64), candidates.astype(np.float64), metric="cosine")
    ids = np.broadcast_to(np.arange(candidates.shape[0]), distances.shape)
    order = np.lexsort((ids, distances), axis=1)[:, :k]
    return np.take_along_axis(distances, order, axis=1), order


def built_graphs(tiny: tuple, graph_params: dict[str, Any], **overrides: Any) -> tuple:
    """Folds, scaling and every graph of the tiny dataset (graph parameters overridden), built eagerly."""
    folds, scaling, builders = tiny_graphs(tiny, {**graph_params, **overrides})
    return folds, scaling, {key: make() for key, make in builders.items()}
