"""Baseline predictors on the same embeddings, genes, targets and folds as SpaHGC.

- ``ridge_pca``: the HEST-Benchmark recipe: standardise, PCA to
  ``min(256, n_samples, dim)`` components, ridge regression (``alpha``).
- ``knn_l1``: mean expression of the k = 7 nearest training spots by L1 distance on
  embeddings (the retrieval step of SpaHGC without the graph): read from the test graph's
  refer edges, so its pool is exactly SpaHGC's references (the fold's training sections).
- ``depth_rank1``: one number per spot, its depth (the mean of its normalised targets
  over the panel), predicted by the ``ridge_pca`` recipe; each gene is then
  ``a_g + b_g * depth`` with ``a_g, b_g`` fitted by least squares on the training spots.
  A rank-1 prediction that knows nothing gene-specific: what per-gene PCC gives for
  depth alone (docs/metrics.md).
- ``train_mean``: every spot gets the mean training expression (a floor: its
  per-gene PCC is undefined, so its PCC metrics are NaN by construction).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .hints import HeteroData

BASELINES = ("ridge_pca", "depth_rank1", "knn_l1", "train_mean")


def pca_projection(train_x: np.ndarray, n_components: int = 256, seed: int = 0) -> Any:
    """Standardise, then PCA to `min(n_components, n_samples, dim)` components, fitted on the training spots.

    The exact PCA through the `dim x dim` covariance (sklearn's `covariance_eigh`): one pass over the spots,
    where the default randomized solver takes several and dominated the stage at 100,000+ training spots.
    """
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n_components = min(n_components, train_x.shape[0], train_x.shape[1])
    pca = PCA(n_components=n_components, svd_solver="covariance_eigh", random_state=seed)
    return make_pipeline(StandardScaler(), pca).fit(train_x)


def ridge_pca_predict(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    alpha: float = 100.0,
    n_components: int = 256,
    seed: int = 0,
    projection: Any = None,
) -> np.ndarray:
    """Standardise, project on PCA (fitted on training spots), ridge-regress the targets; `projection`: the
    fitted `pca_projection(train_x, n_components, seed)` when it is already at hand."""
    from sklearn.linear_model import Ridge

    projection = projection if projection is not None else pca_projection(train_x, n_components, seed)
    ridge = Ridge(alpha=alpha).fit(projection.transform(train_x), train_y)
    return ridge.predict(projection.transform(test_x)).astype(np.float32)


def retrieved_neighbours(graph: HeteroData) -> tuple[np.ndarray, np.ndarray]:
    """A section graph's retrieval: its reference spots' normalised expression `[M, G]` and each target spot's
    retrieved reference rows `[N, k_refer]`, nearest first (the `refer` edges' contract, docs/design.md)."""
    edges = graph["reference", "refer", "target"].edge_index.numpy()
    n_spots = graph["target"].num_nodes
    k = edges.shape[1] // max(n_spots, 1)
    if k == 0 or not np.array_equal(edges[1], np.repeat(np.arange(n_spots), k)):
        raise ValueError(
            f"Section graph {getattr(graph, 'section_id', '?')!r} (fold {getattr(graph, 'fold', '?')!r}): its refer "
            "edges are not k per target spot grouped by spot; rebuild it with the graph pipeline."
        )
    expression = graph["reference"].x[:, int(graph.embedding_dim) :].numpy()
    return expression, edges[0].reshape(n_spots, k)


def knn_l1_predict(
    reference_expression: np.ndarray, neighbours: np.ndarray, k: int = 7, block_size: int = 2048
) -> np.ndarray:
    """Mean expression of each test spot's k nearest training spots, as the graph stage retrieved them.

    `neighbours` are the test graph's refer edges (`retrieved_neighbours`): the graph stage's blocked
    L1 retrieval (graph.metric) from the fold's training sections, nearest first, so this costs
    O(spots x k x genes) and no distance is computed again.
    """
    if not 0 < k <= neighbours.shape[1]:
        raise ValueError(
            f"evaluation.baselines.knn_l1.k = {k}: the section graphs hold {neighbours.shape[1]} retrieved "
            "spots per test spot (graph.k_refer); choose k between 1 and graph.k_refer."
        )
    reference_expression = np.asarray(reference_expression, dtype=np.float32)
    out = np.empty((neighbours.shape[0], reference_expression.shape[1]), dtype=np.float32)
    # in row blocks: the gathered [spots, k, genes] array would not fit for large sections
    for start in range(0, neighbours.shape[0], block_size):
        out[start : start + block_size] = reference_expression[neighbours[start : start + block_size, :k]].mean(axis=1)
    return out


def _gene_depth_lines(train_y: np.ndarray) -> np.ndarray:
    """Per gene, intercept and slope `[2, G]` of its least-squares line on the spot depth."""
    from .metrics import spot_depth

    train_y = np.asarray(train_y, dtype=np.float64)
    depth = spot_depth(train_y)
    # the closed form of the least-squares fit on [1, depth]; a constant depth gives flat lines at the gene means
    centred_depth = depth - depth.mean()
    spread = centred_depth @ centred_depth
    slope = centred_depth @ train_y / spread if spread > 0 else np.zeros(train_y.shape[1])
    return np.vstack([train_y.mean(axis=0) - slope * depth.mean(), slope])


def _through_lines(depth: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """Every gene's value at each spot's depth on its line: `[n_spots, G]` float32."""
    depth = np.asarray(depth, dtype=np.float64).reshape(-1)
    return (np.column_stack([np.ones_like(depth), depth]) @ lines).astype(np.float32)


def depth_rank1_predict(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    alpha: float = 100.0,
    n_components: int = 256,
    seed: int = 0,
    projection: Any = None,
) -> np.ndarray:
    """Ridge-predicted spot depth mapped to every gene by its least-squares line on the training spots."""
    from .metrics import spot_depth

    depth = spot_depth(train_y)[:, None]
    predicted_depth = ridge_pca_predict(train_x, depth, test_x, alpha, n_components, seed, projection)
    return _through_lines(predicted_depth, _gene_depth_lines(train_y))


def oracle_depth_predict(train_y: np.ndarray, test_measured: np.ndarray) -> np.ndarray:
    """A ceiling reference, not a method: the test section's *measured* depth through the training gene lines."""
    from .metrics import spot_depth

    return _through_lines(spot_depth(test_measured), _gene_depth_lines(train_y))


def train_mean_predict(train_y: np.ndarray, n_spots: int) -> np.ndarray:
    """The training mean of every gene, repeated for each test spot."""
    return np.repeat(np.asarray(train_y, dtype=np.float32).mean(axis=0, keepdims=True), n_spots, axis=0)


def predict_baseline(
    name: str,
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    options: dict[str, Any],
    seed: int,
    retrieval: tuple[np.ndarray, np.ndarray] | None = None,
    projections: dict[tuple[int, int], Any] | None = None,
) -> np.ndarray:
    """Run the baseline called `name` with its options from the parameters (`knn_l1` reads the test graph's
    `retrieval`: `retrieved_neighbours`, rows in `test_x`'s order). `projections`: a cache of the PCA
    projections fitted on these `train_x`, by (n_components, seed), shared by ridge_pca and depth_rank1."""
    if name in ("ridge_pca", "depth_rank1"):
        key = (int(options.get("n_components", 256)), seed)
        cache = {} if projections is None else projections
        if key not in cache:
            cache[key] = pca_projection(train_x, *key)
        predictor = ridge_pca_predict if name == "ridge_pca" else depth_rank1_predict
        return predictor(train_x, train_y, test_x, seed=seed, projection=cache[key], **options)
    if name == "knn_l1":
        if retrieval is None:
            raise ValueError("The knn_l1 baseline reads the test section graph's retrieval: pass `retrieval`.")
        return knn_l1_predict(*retrieval, **options)
    if name == "train_mean":
        return train_mean_predict(train_y, test_x.shape[0])
    raise ValueError(f"Unknown baseline '{name}': choose among {', '.join(BASELINES)}.")
