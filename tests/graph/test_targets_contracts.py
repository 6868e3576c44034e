"""Contracts of targets.py left open by the fold tests: library-size arithmetic, its messages and the HVG cache."""

from __future__ import annotations

from decimal import Decimal, localcontext

import numpy as np
import pytest

from spahgc_kedro.targets import fold_target_scaling, transformed_expression


def _section(counts: np.ndarray, genes: list[str]):
    """A section as the readers build it: float32 CSR raw counts."""
    import anndata as ad
    import scipy.sparse as sp

    section = ad.AnnData(X=sp.csr_matrix(np.asarray(counts, dtype=np.float32)))
    section.var_names = genes
    return section


def _exact_libsize(count: int, library: int) -> np.float32:
    """log10(count * 10,000 / library + 1) computed with 60 decimal digits, then rounded to float32."""
    with localcontext() as ctx:
        ctx.prec = 60
        return np.float32(float((Decimal(count) * 10000 / Decimal(library) + 1).log10()))


def test_a_spot_with_a_single_count_is_scaled_to_ten_thousand():
    """A spot whose library is exactly one count is scaled by 10,000 like any non-empty spot."""
    section = _section(np.array([[1, 0], [0, 0], [3, 1]]), ["a", "b"])
    values = transformed_expression(section, ["a", "b"], "log10_libsize")
    expected = np.log10(np.array([[1e4, 0.0], [0.0, 0.0], [7500.0, 2500.0]]) + 1.0).astype(np.float32)
    np.testing.assert_allclose(values, expected, rtol=1e-6)
    assert values[0, 0] == pytest.approx(4.0000434, rel=1e-6)


def test_the_library_size_factor_is_computed_in_float64():
    """Library-size targets are the float32 rounding of the exact value, with no float32 factor in between."""
    # (count, library) pairs where a float32 factor 1e4 / library moves the result by one float32 step
    cases = [(80, 307), (10, 311), (218, 311)]
    counts = np.array([[c, lib - c] for c, lib in cases])
    values = transformed_expression(_section(counts, ["a", "b"]), ["a", "b"], "log10_libsize")
    expected = np.array([_exact_libsize(c, lib) for c, lib in cases])
    np.testing.assert_array_equal(values[:, 0], expected)


def test_empty_spots_stay_exactly_zero_whatever_memory_held_before():
    """Empty spots get factor 0 from an initialised buffer, never leftover memory (NaN here)."""
    n = 16  # small buffers come from numpy's cache of freed ones: fill it with NaN first
    counts = np.zeros((n, 3))
    counts[::2] = [1, 2, 3]
    section = _section(counts, ["a", "b", "c"])
    for _ in range(3):
        poison = [np.full(n, np.nan) for _ in range(8)]
        del poison
        values = transformed_expression(section, ["a", "b"], "log10_libsize")
        assert not np.isnan(values).any()
        np.testing.assert_array_equal(values[1::2], 0.0)
        np.testing.assert_allclose(values[::2], np.log10(np.array([[1e4 / 6 + 1, 2e4 / 6 + 1]] * (n // 2))), rtol=1e-6)


def test_an_unknown_transform_names_the_valid_ones():
    """A stored scaling with an unknown transform fails with the exact list of valid transforms."""
    section = _section(np.array([[1, 2]]), ["a", "b"])
    with pytest.raises(ValueError) as error:
        transformed_expression(section, ["a"], "log2")
    assert str(error.value) == "Unknown graph.target_transform 'log2'. Choose one of: log10, log10_libsize."


def test_fold_target_scaling_reads_and_fills_the_callers_hvg_cache(tiny):
    """fold_target_scaling passes the caller's HVG cache on: it is filled, and cached HVGs decide the panel."""
    import scanpy as sc

    sections, _, _ = tiny
    rule = {"rule": "hvg_intersection", "n_top": 10}
    fold = {"test": ["S5"], "validation": ["S1"], "train": ["S2"]}
    cache: dict[str, set[str]] = {}
    scaling = fold_target_scaling(sections, fold, rule, "log10", cache)
    assert sorted(cache) == ["S1", "S2"]
    for sid in ("S1", "S2"):
        table = sc.pp.highly_variable_genes(sections[sid].copy(), flavor="seurat_v3", n_top_genes=10, inplace=False)
        assert cache[sid] == set(sections[sid].var_names[table["highly_variable"].to_numpy()])
    assert scaling["genes"] == [g for g in sections["S1"].var_names if g in cache["S1"] & cache["S2"]]
    # a cached section is not recomputed: a hand-made cache decides the next fold's panel
    seeded = {"S1": {"G40", "G3", "G50"}, "S2": {"G50", "G3", "G41"}}
    assert fold_target_scaling(sections, fold, rule, "log10", seeded)["genes"] == ["G3", "G50"]
