"""Baseline predictors on the same embeddings, genes, targets and folds as SpaHGC.

- ``ridge_pca``: the HEST-Benchmark recipe: standardise, PCA to
  ``min(256, n_samples, dim)`` components, ridge regression (``alpha``).
- ``knn_l1``: mean expression of the k = 7 nearest training spots by L1 distance on
  embeddings (the retrieval step of SpaHGC without the graph).
- ``train_mean``: every spot gets the mean training expression (a floor: its
  per-gene PCC is undefined, so its PCC metrics are NaN by construction).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def ridge_pca_predict(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    alpha: float = 100.0,
    n_components: int = 256,
    seed: int = 0,
) -> np.ndarray:
    """Standardise, project on PCA (fitted on training spots), ridge-regress the targets."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n_components = min(n_components, train_x.shape[0], train_x.shape[1])
    model = make_pipeline(
        StandardScaler(), PCA(n_components=n_components, random_state=seed), Ridge(alpha=alpha)
    )
    model.fit(train_x, train_y)
    return model.predict(test_x).astype(np.float32)


def knn_l1_predict(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int = 7, chunk: int = 256
) -> np.ndarray:
    """Mean training expression of each test spot's k nearest training spots by L1 distance."""
    from scipy.spatial.distance import cdist

    train_x = np.asarray(train_x, dtype=np.float32)
    test_x = np.asarray(test_x, dtype=np.float32)
    k = min(k, train_x.shape[0])
    out = np.empty((test_x.shape[0], train_y.shape[1]), dtype=np.float32)
    # Chunks of test spots keep the distance matrix small on large Visium sections.
    for start in range(0, test_x.shape[0], chunk):
        dist = cdist(test_x[start : start + chunk], train_x, metric="cityblock")
        nearest = np.argsort(dist, axis=1, kind="stable")[:, :k]
        out[start : start + chunk] = train_y[nearest].mean(axis=1)
    return out


def train_mean_predict(train_y: np.ndarray, n_spots: int) -> np.ndarray:
    """The training mean of every gene, repeated for each test spot."""
    return np.repeat(np.asarray(train_y, dtype=np.float32).mean(axis=0, keepdims=True), n_spots, axis=0)


def predict_baseline(
    name: str, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, options: dict[str, Any], seed: int
) -> np.ndarray:
    """Run the baseline called `name` with its options from the parameters."""
    if name == "ridge_pca":
        return ridge_pca_predict(train_x, train_y, test_x, seed=seed, **options)
    if name == "knn_l1":
        return knn_l1_predict(train_x, train_y, test_x, **options)
    if name == "train_mean":
        return train_mean_predict(train_y, test_x.shape[0])
    raise ValueError(f"Unknown baseline '{name}': choose among ridge_pca, knn_l1, train_mean.")
