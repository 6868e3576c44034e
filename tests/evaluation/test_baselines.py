"""Baselines: ridge recovers a linear relation, kNN retrieves a duplicated section, mean is the mean."""

import numpy as np
import pytest

from spahgc_kedro.baselines import (
    depth_rank1_predict,
    knn_l1_predict,
    oracle_depth_predict,
    predict_baseline,
    retrieved_neighbours,
    ridge_pca_predict,
    train_mean_predict,
)


def test_ridge_pca_recovers_a_linear_relation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 20))
    y = x @ rng.normal(size=(20, 5)) + 3.0
    predicted = ridge_pca_predict(x[:200], y[:200], x[200:], alpha=1e-3)
    np.testing.assert_allclose(predicted, y[200:], atol=1e-2)


def _graph_with_retrieval(neighbours, expression, dim=2):
    import torch
    from torch_geometric.data import HeteroData

    graph = HeteroData()
    n, k = neighbours.shape
    graph["target"].x = torch.zeros(n, dim)
    graph["reference"].x = torch.from_numpy(np.hstack([np.zeros((len(expression), dim)), expression]).astype("f4"))
    graph["reference", "refer", "target"].edge_index = torch.from_numpy(
        np.vstack([neighbours.reshape(-1), np.repeat(np.arange(n), k)])
    )
    graph.embedding_dim, graph.section_id, graph.fold = dim, "C3", "C2"
    return graph


def test_knn_averages_the_first_k_retrieved_spots_of_each_test_spot():
    expression = np.array([[0.0, 1.0], [2.0, 3.0], [100.0, 5.0]])
    # nearest first: spot 0 retrieved rows 1, 0, 2; spot 1 rows 2, 2, 0
    graph = _graph_with_retrieval(np.array([[1, 0, 2], [2, 2, 0]]), expression)
    retrieved, neighbours = retrieved_neighbours(graph)
    np.testing.assert_array_equal(retrieved, expression)
    np.testing.assert_array_equal(neighbours, [[1, 0, 2], [2, 2, 0]])
    np.testing.assert_allclose(knn_l1_predict(retrieved, neighbours, k=2), [[1.0, 2.0], [100.0, 5.0]])
    np.testing.assert_allclose(knn_l1_predict(retrieved, neighbours, k=3, block_size=1)[1], [200 / 3, 11 / 3])
    for k in (0, 4):
        with pytest.raises(ValueError, match=rf"knn_l1.k = {k}: the section graphs hold 3 retrieved spots"):
            knn_l1_predict(retrieved, neighbours, k=k)
    with pytest.raises(ValueError, match="reads the test section graph's retrieval"):
        predict_baseline("knn_l1", np.zeros((3, 2)), expression, np.zeros((2, 2)), {"k": 1}, 0)


def test_refer_edges_not_grouped_by_target_spot_are_refused():
    graph = _graph_with_retrieval(np.array([[1, 0], [2, 2]]), np.zeros((3, 2)))
    graph["reference", "refer", "target"].edge_index = graph["reference", "refer", "target"].edge_index[:, [0, 2, 1, 3]]
    with pytest.raises(ValueError, match=r"^Section graph 'C3' \(fold 'C2'\): its refer edges are not k per target"):
        retrieved_neighbours(graph)


def test_train_mean_and_unknown_baseline():
    y = np.array([[1.0, 2.0], [3.0, 6.0]])
    np.testing.assert_allclose(train_mean_predict(y, 3), [[2.0, 4.0]] * 3)
    with pytest.raises(ValueError, match="Unknown baseline"):
        predict_baseline("lasso", y, y, y, {}, 0)


def test_depth_rank1_recovers_targets_that_are_gene_lines_on_a_linear_depth():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 10))
    depth = x @ rng.normal(size=10) + 5.0
    y = rng.normal(size=6) + np.outer(depth, rng.uniform(0.5, 2.0, 6))
    predicted = depth_rank1_predict(x[:200], y[:200], x[200:], alpha=1e-3)
    np.testing.assert_allclose(predicted, y[200:], atol=1e-2)
    # rank 1: every prediction is one number per spot through each gene's line
    assert np.linalg.matrix_rank(predicted - predicted.mean(axis=0), tol=1e-3) == 1


def test_depth_rank1_scores_no_gene_specific_signal_while_ridge_does():
    from spahgc_kedro.metrics import gene_specific_pcc

    rng = np.random.default_rng(5)
    x = rng.normal(size=(400, 12))
    depth = x[:, 0] + 4.0
    composition = x[:, 1:7]  # gene-specific part, readable from the features
    y = np.outer(depth, rng.uniform(0.5, 2.0, 6)) + composition
    depth_only = depth_rank1_predict(x[:300], y[:300], x[300:], alpha=1e-3)
    ridge = ridge_pca_predict(x[:300], y[:300], x[300:], alpha=1e-3)
    assert np.nanmean(gene_specific_pcc(y[300:], depth_only)) < 0.2
    assert np.nanmean(gene_specific_pcc(y[300:], ridge)) > 0.95


def test_oracle_depth_puts_the_measured_depth_through_the_training_lines():
    from spahgc_kedro.metrics import spot_depth

    rng = np.random.default_rng(6)
    depth = rng.random(50) * 3
    lines = np.vstack([rng.normal(size=4), rng.uniform(0.5, 2, 4)])
    y = np.column_stack([np.ones(50), depth]) @ lines
    test = y[:10] + 0.01
    # y is exactly on lines over `depth`; its spot depth D = mean(l0) + mean(l1) depth, so each
    # gene's line on D is l0 + l1 (D - mean(l0)) / mean(l1)
    on_depth = (spot_depth(test) - lines[0].mean()) / lines[1].mean()
    expected = np.column_stack([np.ones(10), on_depth]) @ lines
    np.testing.assert_allclose(oracle_depth_predict(y, test), expected, atol=1e-5)


def test_ridge_pca_is_sklearns_pipeline_and_both_pca_baselines_share_one_projection():
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(4)
    train_x, train_y, test_x = rng.normal(size=(80, 12)), rng.random((80, 3)), rng.normal(size=(20, 12))
    options = {"alpha": 3.0, "n_components": 5}
    reference = make_pipeline(StandardScaler(), PCA(5, random_state=0), Ridge(alpha=3.0)).fit(train_x, train_y)
    projections = {}
    ridge = predict_baseline("ridge_pca", train_x, train_y, test_x, options, 0, projections=projections)
    np.testing.assert_allclose(ridge, reference.predict(test_x), rtol=1e-4, atol=1e-5)
    depth = predict_baseline("depth_rank1", train_x, train_y, test_x, options, 0, projections=projections)
    assert list(projections) == [(5, 0)]
    np.testing.assert_allclose(depth, depth_rank1_predict(train_x, train_y, test_x, 3.0, 5, 0), rtol=1e-5)


def test_gene_depth_lines_are_the_least_squares_lines_on_the_spot_depth():
    from spahgc_kedro.baselines import _gene_depth_lines
    from spahgc_kedro.metrics import spot_depth

    rng = np.random.default_rng(9)
    y = rng.random((300, 6)) * rng.uniform(0.5, 3, 6) + rng.random((300, 1))
    design = np.column_stack([np.ones(300), spot_depth(y)])
    expected, *_ = np.linalg.lstsq(design, y, rcond=None)
    np.testing.assert_allclose(_gene_depth_lines(y), expected, rtol=1e-10, atol=1e-12)
    # a constant training depth: flat lines at the gene means
    flat = np.column_stack([np.full(5, 0.2), np.full(5, 0.6)])
    np.testing.assert_allclose(_gene_depth_lines(flat), [[0.2, 0.6], [0.0, 0.0]])


def test_pca_projection_is_the_exact_pca_of_the_standardised_spots():
    """Against an SVD of the standardised matrix: the same subspace (projections agree up to each axis' sign)."""
    from spahgc_kedro.baselines import pca_projection

    rng = np.random.default_rng(10)
    x = rng.normal(size=(500, 20)) @ rng.normal(size=(20, 20))
    standardised = (x - x.mean(axis=0)) / x.std(axis=0)
    _, _, axes = np.linalg.svd(standardised, full_matrices=False)
    ours = pca_projection(x, n_components=6).transform(x)
    expected = standardised @ axes[:6].T
    np.testing.assert_allclose(np.abs(ours), np.abs(expected), rtol=1e-6, atol=1e-8)
    assert pca_projection(x[:4], n_components=6).transform(x).shape == (500, 4)
