"""Baselines: ridge recovers a linear relation, kNN retrieves a duplicated section, mean is the mean."""

import numpy as np
import pytest

from spahgc_kedro.baselines import knn_l1_predict, predict_baseline, ridge_pca_predict, train_mean_predict


def test_ridge_pca_recovers_a_linear_relation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 20))
    y = x @ rng.normal(size=(20, 5)) + 3.0
    predicted = ridge_pca_predict(x[:200], y[:200], x[200:], alpha=1e-3)
    np.testing.assert_allclose(predicted, y[200:], atol=1e-2)


def test_knn_retrieves_a_duplicated_section_exactly():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 6))
    y = rng.random((40, 3))
    np.testing.assert_allclose(knn_l1_predict(x, y, x, k=1), y, rtol=1e-6)


def test_knn_averages_the_k_nearest_by_l1():
    train_x = np.array([[0.0, 0.0], [1.0, 1.0], [10.0, 0.0]])
    train_y = np.array([[0.0], [2.0], [100.0]])
    # L1 from (0, 1.5): 1.5, 1.5, 11.5 -> the first two.
    assert knn_l1_predict(train_x, train_y, np.array([[0.0, 1.5]]), k=2)[0, 0] == pytest.approx(1.0)


def test_train_mean_and_unknown_baseline():
    y = np.array([[1.0, 2.0], [3.0, 6.0]])
    np.testing.assert_allclose(train_mean_predict(y, 3), [[2.0, 4.0]] * 3)
    with pytest.raises(ValueError, match="Unknown baseline"):
        predict_baseline("lasso", y, y, y, {}, 0)
