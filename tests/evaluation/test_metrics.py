"""Metric functions against hand-computed values."""

import numpy as np
import pytest

from spahgc_kedro.metrics import (
    gene_specific_pcc,
    pearson_per_gene,
    pooled_pcc,
    section_metrics,
    spot_depth,
    top_genes,
)


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


def _depth_and_composition(n_spots=60, n_genes=12, seed=0):
    """Targets = gene line on a spot depth + a depth-independent gene-specific part."""
    rng = np.random.default_rng(seed)
    depth = rng.gamma(4.0, 1.0, size=n_spots)
    slopes, offsets = rng.uniform(0.2, 2.0, n_genes), rng.normal(size=n_genes)
    composition = rng.normal(size=(n_spots, n_genes))
    return offsets + np.outer(depth, slopes) + composition, composition


def test_gene_specific_pcc_is_one_for_a_perfect_prediction_and_zero_for_depth_alone():
    measured, _ = _depth_and_composition()
    assert np.allclose(gene_specific_pcc(measured, measured), 1.0)
    # any per-gene affine function of the measured depth carries nothing gene-specific
    rng = np.random.default_rng(3)
    depth = spot_depth(measured)
    depth_only = rng.normal(size=12) + np.outer(depth, rng.uniform(0.2, 2, 12))
    np.testing.assert_array_equal(gene_specific_pcc(measured, depth_only), 0.0)
    # predictions are float32 in the pipeline: rounding residue is not a gene-specific signal
    np.testing.assert_array_equal(gene_specific_pcc(measured, depth_only.astype(np.float32)), 0.0)
    assert section_metrics(measured, depth_only)["pcc_gene_specific"] == 0.0
    # ...although its plain per-gene PCC is high: that is what the metric controls for
    assert section_metrics(measured, depth_only)["pcc_acg"] > 0.3


def test_gene_specific_pcc_matches_the_partial_correlation_formula_from_scipy():
    from scipy.stats import pearsonr

    measured, composition = _depth_and_composition(seed=1)
    rng = np.random.default_rng(2)
    predicted = composition + 0.8 * rng.normal(size=composition.shape) + np.outer(rng.random(60), np.ones(12))
    depth = measured.mean(axis=1)
    expected = []
    for g in range(measured.shape[1]):
        r_xy = pearsonr(measured[:, g], predicted[:, g]).statistic
        r_xz = pearsonr(measured[:, g], depth).statistic
        r_yz = pearsonr(predicted[:, g], depth).statistic
        expected.append((r_xy - r_xz * r_yz) / np.sqrt((1 - r_xz**2) * (1 - r_yz**2)))
    np.testing.assert_allclose(gene_specific_pcc(measured, predicted), expected, atol=1e-10)
    # the depth-independent part is recovered: clearly positive
    assert np.mean(expected) > 0.3


def test_gene_specific_pcc_flags_constant_genes_as_undefined():
    measured, _ = _depth_and_composition(n_genes=4)
    predicted = measured.copy()
    predicted[:, 1] = 2.0
    measured[:, 3] = 5.0
    pcc = gene_specific_pcc(measured, predicted)
    assert np.isnan(pcc[1]) and np.isnan(pcc[3]) and pcc[0] == pytest.approx(1.0)


def test_gene_specific_pcc_is_scipys_partial_correlation_with_its_edge_cases():
    from scipy import stats

    from spahgc_kedro.metrics import gene_specific_pcc

    rng = np.random.default_rng(3)
    measured = rng.gamma(2.0, 1.0, size=(80, 6))
    predicted = measured + rng.normal(0, 1.0, size=measured.shape)
    measured[:, 0] = 1.0  # measured constant: undefined
    depth = measured.mean(axis=1)
    predicted[:, 1] = 2.0  # predicted constant: undefined
    predicted[:, 2] = 0.001 * depth + 0.002  # depth only, on a small scale: 0, not noise
    pcc = gene_specific_pcc(measured, predicted)
    assert np.isnan(pcc[0]) and np.isnan(pcc[1]) and pcc[2] == 0.0
    # by hand: residuals of each gene after regressing on [1, depth], then their Pearson correlation
    design = np.column_stack([np.ones(80), measured.mean(axis=1)])
    for gene in (3, 4, 5):
        resid_m = measured[:, gene] - design @ np.linalg.lstsq(design, measured[:, gene], rcond=None)[0]
        resid_p = predicted[:, gene] - design @ np.linalg.lstsq(design, predicted[:, gene], rcond=None)[0]
        assert pcc[gene] == pytest.approx(stats.pearsonr(resid_m, resid_p)[0], abs=1e-10)
    with pytest.raises(ValueError, match=r"^Shapes differ: measured \(80, 6\), predicted \(80, 5\)\.$"):
        gene_specific_pcc(measured, predicted[:, :5])


def test_top_genes_break_ties_in_panel_order_and_heg50_takes_fifty():
    from spahgc_kedro.metrics import finite_mean, section_metrics, top_genes

    means = np.repeat(np.arange(20.0), 3)[::-1]  # 60 genes, each mean three times
    measured = np.tile(means, (4, 1)) + np.array([[0.0], [1.0], [2.0], [3.0]])
    assert top_genes(measured, 7, "mean").tolist() == [0, 1, 2, 3, 4, 5, 6]
    with pytest.raises(ValueError, match="Unknown gene ranking 'median'"):
        top_genes(measured, 3, "median")
    rng = np.random.default_rng(0)
    measured = rng.gamma(2.0, 1.0, size=(30, 60))
    predicted = measured + rng.normal(0, 1.0, size=measured.shape)
    pcc = np.array([stats_pcc(measured[:, g], predicted[:, g]) for g in range(60)])
    top = np.argsort(-measured.mean(axis=0))[:50]
    assert section_metrics(measured, predicted)["pcc_heg50"] == pytest.approx(pcc[top].mean())
    assert np.isnan(finite_mean([])) and np.isnan(finite_mean([np.nan])) and finite_mean([1.0, np.nan, 3.0]) == 2.0


def stats_pcc(a: np.ndarray, b: np.ndarray) -> float:
    from scipy import stats

    return float(stats.pearsonr(a, b)[0])


def test_metrics_of_float32_predictions_are_computed_in_float64():
    """Predictions are stored as float32; correlating them in float32 loses digits when values sit far from 0."""
    from spahgc_kedro.metrics import finite_mean, pearson_per_gene, section_metrics

    rng = np.random.default_rng(5)
    measured = (1000.0 + rng.normal(0, 0.01, size=(200, 3))).astype(np.float32)
    predicted = (1000.0 + rng.normal(0, 0.01, size=(200, 3))).astype(np.float32)
    exact = [stats_pcc(measured[:, g].astype(np.float64), predicted[:, g].astype(np.float64)) for g in range(3)]
    np.testing.assert_allclose(pearson_per_gene(measured, predicted), exact, rtol=1e-12)
    metrics = section_metrics(measured, predicted)
    diff = predicted.astype(np.float64) - measured.astype(np.float64)
    assert metrics["mse"] == pytest.approx(float((diff**2).mean()), rel=1e-12)
    thirds = np.array([1.0, 2.0, 4.0], dtype=np.float32) / 3
    assert finite_mean(thirds) == pytest.approx(float(thirds.astype(np.float64).mean()), rel=1e-12)
    with pytest.raises(ValueError, match=r"^Shapes differ: measured \(200, 3\), predicted \(200, 2\)\.$"):
        pearson_per_gene(measured, predicted[:, :2])


def test_pcc_is_nan_for_columns_constant_up_to_rounding_and_never_beyond_one():
    # 0.1 three times has a mean of 0.10000000000000002: the centred column is 1e-17, not 0
    varying = np.array([0.3, 0.7, 0.9])
    constant = np.full(3, 0.1)
    pcc = pearson_per_gene(np.column_stack([varying, constant]), np.column_stack([constant, varying]))
    assert np.isnan(pcc).all()
    # exact lines whose PCC rounds to 1.0000000000000002 and -1.0000000000000002 unless clipped
    up = np.array([-0.54, -0.32, 0.41, 1.04, -0.13, 1.37, -0.67])
    down = np.array([0.36, 0.29, 0.03, 0.55, -0.74, -0.16, -0.48])
    pcc = pearson_per_gene(np.column_stack([up, down]), np.column_stack([6.51 * up + 0.3, -4.59 * down + 0.3]))
    assert pcc.tolist() == [1.0, -1.0]


def test_depth_residuals_are_the_least_squares_residuals_on_one_and_depth():
    from spahgc_kedro.metrics import _depth_residuals

    rng = np.random.default_rng(3)
    values, depth = rng.normal(size=(40, 5)) * [1, 10, 100, 0.1, 1], rng.random(40) * 7 + 2
    design = np.column_stack([np.ones(40), depth])
    expected = values - design @ np.linalg.lstsq(design, values, rcond=None)[0]
    np.testing.assert_allclose(_depth_residuals(values, depth), expected, atol=1e-9)
    # a constant depth explains the mean only
    np.testing.assert_allclose(_depth_residuals(values, np.full(40, 3.0)), values - values.mean(axis=0), atol=1e-12)


def test_gene_specific_pcc_flags_columns_constant_up_to_rounding_and_keeps_unit_ranges():
    """0.1 in every spot centres to 1e-17, not 0: without the final guard those genes would get a PCC (or the
    depth-only 0); a gene whose range is exactly 1 is an ordinary gene."""
    rng = np.random.default_rng(4)
    measured = rng.gamma(2.0, 1.0, size=(30, 4))
    predicted = measured + rng.normal(0, 0.5, size=measured.shape)
    measured[:, 1] = 0.1
    predicted[:, 2] = 0.1
    measured[:, 3] = rng.integers(0, 2, size=30)  # range exactly 1
    predicted[:, 3] = (measured[:, 3] + rng.integers(0, 2, size=30)) / 2  # range exactly 1 too
    assert np.ptp(measured[:, 3]) == 1.0 and np.ptp(predicted[:, 3]) == 1.0
    pcc = gene_specific_pcc(measured, predicted)
    assert np.isnan(pcc[1]) and np.isnan(pcc[2])
    assert np.isfinite(pcc[0]) and np.isfinite(pcc[3])


def test_gene_specific_pcc_does_not_depend_on_the_scale_of_the_data():
    """Partial correlation is scale-free: the depth is removed however small its spread."""
    rng = np.random.default_rng(6)
    measured = rng.gamma(2.0, 1.0, size=(80, 6))
    predicted = measured + rng.normal(0, 1.0, size=measured.shape)
    depth = spot_depth(measured)
    assert ((depth - depth.mean()) ** 2).sum() > 1 > ((0.01 * (depth - depth.mean())) ** 2).sum()
    np.testing.assert_allclose(
        gene_specific_pcc(0.01 * measured, 0.01 * predicted), gene_specific_pcc(measured, predicted), atol=1e-12
    )


def test_constant_genes_give_nan_without_numpy_warnings():
    import warnings

    measured = np.array([[1.0, 2.0], [2.0, 2.0], [4.0, 2.0]])
    predicted = np.array([[1.0, 3.0], [1.0, 1.0], [1.0, 2.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(pearson_per_gene(measured, predicted)).all()


def test_section_metrics_use_the_per_gene_values_given_and_count_strictly_above_thresholds():
    rng = np.random.default_rng(7)
    measured = rng.gamma(2.0, 1.0, size=(20, 4))
    predicted = measured + rng.normal(0, 1.0, size=measured.shape)
    pcc = np.array([0.3, 0.5, 0.5000001, 0.2])
    gene_specific = np.array([0.1, 0.2, 0.3, np.nan])
    metrics = section_metrics(measured, predicted, n_top=4, pcc=pcc, gene_specific=gene_specific)
    assert metrics["pcc_acg"] == pytest.approx(pcc.mean()) and metrics["pcc_gene_specific"] == pytest.approx(0.2)
    assert metrics["n_pcc_gt_0_3"] == 2 and metrics["n_pcc_gt_0_5"] == 1


def test_spot_depth_and_gene_ranking_follow_their_definitions():
    """Depth is the float64 mean of a spot's targets; genes tied on the ranking keep panel order."""
    rng = np.random.default_rng(8)
    stored = (rng.random((50, 785)) * 10).astype(np.float32)
    np.testing.assert_allclose(spot_depth(stored), stored.astype(np.float64).mean(axis=1), rtol=1e-13)
    means = rng.integers(0, 3, size=40).astype(np.float64)  # many ties
    measured = np.tile(means, (5, 1)) + rng.normal(0, 1, size=(5, 1))
    score = measured.mean(axis=0)
    expected = sorted(range(40), key=lambda gene: (-score[gene], gene))[:25]
    assert top_genes(measured, 25, "mean").tolist() == expected


def test_one_measured_section_scores_many_methods_as_the_functions_score_each():
    from spahgc_kedro.metrics import MeasuredSection

    rng = np.random.default_rng(3)
    measured = rng.random((80, 12)).astype(np.float32)
    measured[:, 4] = 0.5
    measured[:, 7] = measured[:, :3].mean(axis=1)
    shared = MeasuredSection(measured, n_top=5)
    predictions = [rng.random((80, 12)).astype(np.float32) for _ in range(3)]
    predictions.append(np.tile(measured.mean(axis=1, keepdims=True), (1, 12)))
    # twice over: scoring must not change what the section keeps
    for predicted in predictions + predictions:
        pcc, gene_specific = shared.pcc(predicted), shared.gene_specific(predicted)
        assert np.array_equal(pcc, pearson_per_gene(measured, predicted), equal_nan=True)
        assert np.array_equal(gene_specific, gene_specific_pcc(measured, predicted), equal_nan=True)
        assert shared.metrics(predicted) == section_metrics(measured, predicted, n_top=5)
    halves = [measured[:40], measured[40:]]
    pooled = MeasuredSection(np.concatenate(halves))
    assert pooled.pooled([predictions[0][:40], predictions[0][40:]]) == pooled_pcc(
        halves, [predictions[0][:40], predictions[0][40:]]
    )
    with pytest.raises(ValueError, match=r"Shapes differ: measured \(80, 12\), predicted \(80, 11\)"):
        shared.gene_specific(predictions[0][:, :11])
