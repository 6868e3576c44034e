"""The metrics module's small contracts, each against a hand-made answer: gene ranking precision, HEG-50."""

from __future__ import annotations

import numpy as np
import pytest

from spahgc_kedro.metrics import MeasuredSection, top_genes


def test_top_genes_rank_float32_targets_by_their_exact_means_and_variances():
    """A gene one float32 step above another outranks it, although float32 arithmetic would call them tied."""
    step = np.float32(2.0**-23)  # one float32 step above 1
    measured = np.array([[1.0, 1.0], [1.0, 1.0 + step]], dtype=np.float32)
    # by hand: gene 1's mean is 1 + 2^-24 > 1; in float32 the sum 2 + 2^-23 rounds to 2 and the means tie
    assert measured.mean(axis=0)[0] == measured.mean(axis=0)[1]
    assert top_genes(measured, 1, "mean").tolist() == [1]
    # variances: gene 0 is constant (0), gene 1 varies by one step, however small
    assert top_genes(measured, 1, "variance").tolist() == [1]


def test_measured_section_scores_heg50_over_fifty_genes_by_default():
    """HEG-50 means 50 genes: with 51, the gene of lowest mean is left out of pcc_heg50."""
    n_spots, n_genes = 6, 51
    ramp = np.arange(n_spots, dtype=np.float64)[:, None]
    measured = ramp + 10.0 * np.arange(n_genes, 0, -1)  # gene means fall with the gene index
    predicted = np.broadcast_to(ramp, (n_spots, n_genes)).copy()
    predicted[:, -1] = -ramp[:, 0]  # the lowest-mean gene is predicted backwards: PCC -1, the others +1
    section = MeasuredSection(measured)
    assert section.heg.tolist() == list(range(50))
    metrics = section.metrics(predicted)
    assert metrics["pcc_heg50"] == pytest.approx(1.0)
    assert metrics["pcc_acg"] == pytest.approx(49 / 51)
