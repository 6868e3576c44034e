"""Hypergeometric enrichment against scipy by hand, BH FDR, GMT parsing."""

import numpy as np
import pytest
from scipy.stats import hypergeom

from spahgc_kedro.enrichment import benjamini_hochberg, hypergeometric_enrichment, read_gmt


def test_p_values_match_the_hypergeometric_tail(tmp_path):
    gmt = tmp_path / "sets.gmt"
    gmt.write_text("IL17\tdesc\tA\tB\tC\tZ\nTNF\tdesc\tD\tE\tF\tG\nTINY\tdesc\tA\n")
    universe = list("ABCDEFGHIJ")
    table = hypergeometric_enrichment(["A", "B", "D"], universe, read_gmt(gmt), min_set_size=2).set_index("term")
    # IL17: Z is outside the universe -> set size 3, overlap 2 of 3 selected among 10 genes.
    assert table.loc["IL17", "set_size"] == 3 and table.loc["IL17", "overlap"] == 2
    assert table.loc["IL17", "p_value"] == pytest.approx(hypergeom(10, 3, 3).pmf(2) + hypergeom(10, 3, 3).pmf(3))
    assert table.loc["TNF", "p_value"] == pytest.approx(1 - hypergeom(10, 4, 3).pmf(0))
    assert "TINY" not in table.index
    assert table.loc["IL17", "genes"] == "A,B"
    np.testing.assert_allclose(table["fdr"], benjamini_hochberg(table["p_value"].to_numpy()))


def test_benjamini_hochberg_by_hand():
    # Sorted p (0.01, 0.02, 0.03, 0.5) * 4 / rank = 0.04, 0.04, 0.04, 0.5; monotone from the top.
    np.testing.assert_allclose(benjamini_hochberg(np.array([0.5, 0.01, 0.03, 0.02])), [0.5, 0.04, 0.04, 0.04])


def test_bad_gmt_line_names_the_file(tmp_path):
    gmt = tmp_path / "bad.gmt"
    gmt.write_text("ONLYNAME\n")
    with pytest.raises(ValueError, match="bad.gmt, line 1"):
        read_gmt(gmt)
