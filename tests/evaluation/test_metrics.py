"""Metric functions against hand-computed values."""

import numpy as np
import pytest

from spahgc_kedro.metrics import pearson_per_gene, pooled_pcc, section_metrics, top_genes


def test_pearson_matches_hand_computed_values_and_flags_constant_genes():
    measured = np.array([[1.0, 2.0, 5.0], [2.0, 2.0, 5.0], [3.0, 2.0, 5.0]])
    predicted = np.array([[3.0, 1.0, 1.0], [2.0, 2.0, 1.0], [1.0, 4.0, 1.0]])
    pcc = pearson_per_gene(measured, predicted)
    assert pcc[0] == pytest.approx(-1.0)
    # Gene 1 is constant in measured, gene 2 in both: no correlation defined.
    assert np.isnan(pcc[1]) and np.isnan(pcc[2])


def test_pearson_of_a_hand_example():
    measured = np.array([[1.0], [2.0], [3.0], [4.0]])
    predicted = np.array([[1.0], [3.0], [2.0], [4.0]])
    # Deviations (-1.5,-.5,.5,1.5) both; cross sum 2.25+(-.25)+(-.25)+2.25=4; norms 5 -> 0.8.
    assert pearson_per_gene(measured, predicted)[0] == pytest.approx(0.8)


def test_top_genes_rank_by_mean_and_variance():
    measured = np.array([[10.0, 0.0, 1.0], [10.0, 4.0, 2.0]])
    assert list(top_genes(measured, 2, "mean")) == [0, 1]
    assert list(top_genes(measured, 2, "variance")) == [1, 2]
    assert list(top_genes(measured, 5, "mean")) == [0, 1, 2]
    with pytest.raises(ValueError, match="Unknown gene ranking"):
        top_genes(measured, 1, "median")


def test_section_metrics_exclude_and_count_constant_genes():
    measured = np.array([[1.0, 0.0, 7.0, 1.0], [2.0, 1.0, 7.0, 2.0], [3.0, 2.0, 7.0, 3.0]])
    predicted = np.array([[1.0, 2.0, 1.0, 1.0], [2.0, 1.0, 2.0, 1.0], [3.0, 0.0, 3.0, 1.0]])
    metrics = section_metrics(measured, predicted, n_top=2)
    # PCCs: +1, -1, NaN (constant measured), NaN (constant predicted).
    assert metrics["pcc_acg"] == pytest.approx(0.0)
    assert metrics["n_constant"] == 2
    assert metrics["n_genes"] == 4
    assert metrics["n_pcc_gt_0_3"] == 1 and metrics["n_pcc_gt_0_5"] == 1
    # HEG-2: gene 2 (mean 7, constant -> excluded) and gene 0 (mean 2, tied with 3 -> panel order).
    assert metrics["pcc_heg50"] == pytest.approx(1.0)
    # HVG-2: genes 0, 1, 3 share variance 2/3; the stable ranking takes genes 0 and 1.
    assert metrics["pcc_hvg50"] == pytest.approx(0.0)
    diff = predicted - measured
    assert metrics["mse"] == pytest.approx((diff**2).mean())
    assert metrics["mae"] == pytest.approx(np.abs(diff).mean())


def test_pooled_pcc_concatenates_folds_before_correlating():
    measured = [np.array([[0.0], [1.0]]), np.array([[10.0], [11.0]])]
    predicted = [np.array([[1.0], [0.0]]), np.array([[11.0], [10.0]])]
    # Each fold alone is anti-correlated; pooled, the fold offset dominates.
    pooled, n_constant = pooled_pcc(measured, predicted)
    assert pooled > 0.9 and n_constant == 0
