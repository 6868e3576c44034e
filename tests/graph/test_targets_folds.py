"""Fold schemes, gene panels and target scaling."""

from __future__ import annotations

import numpy as np
import pytest

from spahgc_kedro.folds import auto_validation, ensemble_members, is_primary_fold, make_folds
from spahgc_kedro.targets import (
    common_genes,
    fold_target_scaling,
    load_gene_list,
    minmax_scale,
    select_panel,
    transformed_expression,
)
from tests.helpers.tiny_sections import SECTIONS, TEST_HVGS, TRAIN_HVGS, tiny_section

MANIFEST_SECTIONS = [{"section_id": s, "patient_id": p} for s, p in SECTIONS]


def test_leave_one_section_out_folds_partition_sections():
    folds = make_folds(MANIFEST_SECTIONS, "leave_one_section_out")
    assert folds["scheme"] == "leave_one_section_out"
    assert list(folds["folds"]) == ["S1", "S2", "S3", "S4", "S5"]
    for name, fold in folds["folds"].items():
        assert fold["test"] == [name]
        assert len(fold["validation"]) == 1
        assert sorted(fold["test"] + fold["validation"] + fold["train"]) == [s for s, _ in SECTIONS]
    # S1 (patient A): the next section S2 is patient A too, so S3 (patient B) validates.
    assert folds["folds"]["S1"]["validation"] == ["S3"]
    # S5 is last: the walk wraps around to S1.
    assert folds["folds"]["S5"]["validation"] == ["S1"]


def test_leave_one_patient_out_keeps_patients_together():
    folds = make_folds(MANIFEST_SECTIONS, "leave_one_patient_out")
    assert list(folds["folds"]) == ["A", "B", "C"]
    patient = dict(SECTIONS)
    for name, fold in folds["folds"].items():
        assert {patient[s] for s in fold["test"]} == {name}
        assert all(patient[s] != name for s in fold["validation"] + fold["train"])
    assert folds["folds"]["A"] == {"test": ["S1", "S2"], "validation": ["S3"], "train": ["S4", "S5"]}


def test_rotated_validation_adds_members_that_never_see_the_test_sections():
    plain = make_folds(MANIFEST_SECTIONS, "leave_one_patient_out")
    rotated = make_folds(MANIFEST_SECTIONS, "leave_one_patient_out", validation="rotate")
    members = ensemble_members(rotated)
    # patient A (S1, S2) leaves S3, S4, S5: the automatic choice S3 heads, S4 and S5 validate the members
    assert members["A"] == ["A", "A@S4", "A@S5"]
    assert rotated["folds"]["A@S4"] == {
        "test": ["S1", "S2"],
        "validation": ["S4"],
        "train": ["S3", "S5"],
        "ensemble": "A",
    }
    for head, names in members.items():
        # the head is the plain plan's fold, so the single-model row is unchanged
        assert {k: v for k, v in rotated["folds"][head].items() if k != "ensemble"} == plain["folds"][head]
        assert is_primary_fold(rotated, head) and not any(is_primary_fold(rotated, n) for n in names[1:])
        fit = {frozenset(rotated["folds"][n]["train"] + rotated["folds"][n]["validation"]) for n in names}
        assert len(fit) == 1  # every member fits targets on the same sections
        for name in names:
            fold = rotated["folds"][name]
            assert fold["test"] == plain["folds"][head]["test"]
            assert not set(fold["test"]) & set(fold["train"] + fold["validation"])
    assert sorted({tuple(rotated["folds"][n]["validation"]) for n in members["B"]}) == [("S1",), ("S2",), ("S5",)]
    assert ensemble_members(plain) == {} and all(is_primary_fold(plain, n) for n in plain["folds"])


def test_single_fold_and_explicit_validation():
    folds = make_folds(MANIFEST_SECTIONS, "leave_one_section_out", fold="S2", validation="S5")
    assert folds["folds"] == {"S2": {"test": ["S2"], "validation": ["S5"], "train": ["S1", "S3", "S4"]}}
    # The fold testing the requested validation section falls back to the automatic choice.
    fallback = make_folds(MANIFEST_SECTIONS, "leave_one_section_out", fold="S5", validation="S5")
    assert fallback["folds"]["S5"]["validation"] == [auto_validation(MANIFEST_SECTIONS, ["S5"])]


def test_bad_fold_requests_fail_clearly():
    with pytest.raises(ValueError, match="not a fold"):
        make_folds(MANIFEST_SECTIONS, "leave_one_section_out", fold="Z9")
    with pytest.raises(ValueError, match="Unknown graph.fold_scheme"):
        make_folds(MANIFEST_SECTIONS, "leave_one_slide_out")
    one_patient = [dict(s, patient_id="A") for s in MANIFEST_SECTIONS]
    with pytest.raises(ValueError, match="nothing is left to train"):
        make_folds(one_patient, "leave_one_patient_out")
    with pytest.raises(ValueError, match="at least 2"):
        make_folds(MANIFEST_SECTIONS[:3], "leave_one_section_out")


def test_hvg_panel_ignores_the_test_section(tiny, caplog):
    sections, _, _ = tiny
    rule = {"rule": "hvg_intersection", "n_top": 10}
    with caplog.at_level("INFO", logger="spahgc_kedro.targets"):
        panel = select_panel(rule, sections, ["S1", "S2", "S3", "S4"])
    assert panel == [f"G{g}" for g in TRAIN_HVGS]
    assert f"HVG panel: {len(panel)} genes in the top-10 HVGs of all 4 fitting sections." in caplog.text
    # S5's own HVGs (G10-G14) never enter while it is tested; they would if it were fitted.
    with_s5 = select_panel(rule, sections, ["S1", "S2", "S3", "S5"])
    assert with_s5 == [f"G{g}" for g in sorted(set(TRAIN_HVGS) & set(TEST_HVGS))]
    changed = dict(sections, S5=tiny_section("S5", "C", seed=99, variable_genes=[20, 21, 22]))
    assert select_panel(rule, changed, ["S1", "S2", "S3", "S4"]) == panel


def test_gene_list_panel(tmp_path, tiny, caplog):
    sections, _, _ = tiny
    text = tmp_path / "genes.txt"
    text.write_text("G3\nNOT_A_GENE\nG1\n")
    assert select_panel({"rule": "list", "path": str(text)}, sections, ["S1"]) == ["G3", "G1"]
    assert "1 of 3 genes" in caplog.text
    npy = tmp_path / "genes.npy"
    np.save(npy, np.array(["G7", "G2"]))
    assert load_gene_list(npy) == ["G7", "G2"]
    csv = tmp_path / "genes.csv"
    csv.write_text("gene\nG4\nG4\nG1\n")
    assert load_gene_list(csv) == ["G4", "G1"]
    with pytest.raises(FileNotFoundError, match="biomed-AI/Hist2ST"):
        load_gene_list(tmp_path / "missing.npy")
    (tmp_path / "none.txt").write_text("NOPE\n")
    with pytest.raises(ValueError, match="empty"):
        select_panel({"rule": "list", "path": str(tmp_path / "none.txt")}, sections, ["S1"])


def test_a_pickled_gene_list_is_refused_without_running_it(tmp_path):
    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "ran"), "w"))

    npy = tmp_path / "evil.npy"
    np.save(npy, np.array([Payload()], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickle can run code"):
        load_gene_list(npy)
    assert not (tmp_path / "ran").exists()


def test_no_user_file_is_read_with_pickle():
    from tests.helpers.project import PROJECT_ROOT

    sources = (PROJECT_ROOT / "src").rglob("*.py")
    offending = [
        f"{path.name}: {needle}"
        for path in sources
        for needle in ("allow_pickle=True", "pickle.load", "weights_only=False")
        if needle in path.read_text()
    ]
    assert offending == []


def test_minmax_statistics_exclude_the_test_section(tiny):
    sections, _, _ = tiny
    fold = {"test": ["S5"], "validation": ["S1"], "train": ["S2", "S3", "S4"]}
    scaling = fold_target_scaling(sections, fold, {"rule": "hvg_intersection", "n_top": 10}, "log10")
    genes = scaling["genes"]
    fit = np.vstack([transformed_expression(sections[s], genes, "log10") for s in ["S1", "S2", "S3", "S4"]])
    np.testing.assert_allclose(scaling["min"], fit.min(axis=0))
    np.testing.assert_allclose(scaling["max"], fit.max(axis=0))
    # S5's counts are all >= 1000, above every fitted maximum.
    test_scaled = minmax_scale(transformed_expression(sections["S5"], genes, "log10"), scaling["min"], scaling["max"])
    assert (test_scaled > 1).all()


def test_transforms_and_constant_genes():
    import anndata as ad
    import scipy.sparse as sp

    adata = ad.AnnData(X=sp.csr_matrix(np.array([[9.0, 1.0], [99.0, 1.0], [0.0, 0.0]], dtype=np.float32)))
    adata.var_names = ["a", "b"]
    np.testing.assert_allclose(transformed_expression(adata, ["a"], "log10")[:, 0], [1.0, 2.0, 0.0])
    libsize = transformed_expression(adata, ["a", "b"], "log10_libsize")
    np.testing.assert_allclose(libsize[0], np.log10(np.array([9e3, 1e3]) + 1), rtol=1e-6)
    assert (libsize[2] == 0).all()  # an empty spot stays zero
    # the second gene is constant in the fitting sections: scale 1, so another section's 7 lands at 7 - 5
    scaled = minmax_scale(np.array([[2.0, 5.0], [2.0, 7.0]], dtype=np.float32), [1.0, 5.0], [3.0, 5.0])
    np.testing.assert_allclose(scaled, [[0.5, 0.0], [0.5, 2.0]])
    with pytest.raises(ValueError, match="target_transform"):
        transformed_expression(adata, ["a"], "log2")


def test_minmax_unscale_inverts_minmax_scale():
    import numpy as np

    from spahgc_kedro.targets import minmax_scale, minmax_unscale

    values = np.array([[0.0, 2.0, 5.0], [1.0, 4.0, 5.0]], dtype=np.float32)
    low, high = [0.0, 2.0, 5.0], [1.0, 4.0, 5.0]  # the last gene is constant
    scaled = minmax_scale(values, low, high)
    np.testing.assert_allclose(scaled, [[0, 0, 0], [1, 1, 0]])
    np.testing.assert_allclose(minmax_unscale(scaled, low, high), values)


def test_common_genes_are_those_of_every_section_in_the_first_sections_order():
    assert common_genes({"A1": ["x", "y", "z", "w"], "B1": ["w", "z", "y"], "C1": ["y", "z", "v", "w"]}) == [
        "y",
        "z",
        "w",
    ]
    assert common_genes({"A1": ["x", "y"]}) == ["x", "y"]  # one section: its own genes


def test_dense_counts_give_the_targets_of_sparse_ones():
    """A user's h5ad may hold a dense count matrix: the same targets as its sparse form, in both transforms."""
    import anndata as ad
    import scipy.sparse as sp

    counts = np.random.default_rng(0).poisson(3.0, size=(30, 6)).astype(np.float32)
    dense, sparse = ad.AnnData(X=counts), ad.AnnData(X=sp.csr_matrix(counts))
    for adata in (dense, sparse):
        adata.var_names = [f"G{i}" for i in range(6)]
    for transform in ("log10", "log10_libsize"):
        expected = transformed_expression(sparse, ["G4", "G1"], transform)
        np.testing.assert_array_equal(transformed_expression(dense, ["G4", "G1"], transform), expected)
    np.testing.assert_allclose(expected[:, 1], np.log10(1e4 * counts[:, 1] / counts.sum(axis=1) + 1), rtol=1e-6)


def test_scaling_is_float32_arithmetic_throughout():
    """Min-max scaling of float32 targets never passes through float64 (a section of 100k bins x 1,000 genes
    is 400 MB per float32 temporary): bit-equal to the same sums done in float32."""
    rng = np.random.default_rng(0)
    values = rng.gamma(2.0, 1.0, size=(2000, 5)).astype(np.float32)
    low, high = values.min(axis=0).tolist(), (values.max(axis=0) * 1.1).tolist()
    low32, span32 = np.float32(low), np.float32(high) - np.float32(low)
    np.testing.assert_array_equal(minmax_scale(values, low, high), (values - low32) / span32)


def test_the_real_her2st_panel_loads_without_pickle(her2st_gene_list):
    genes = load_gene_list(her2st_gene_list)
    assert len(genes) == 785 and len(set(genes)) == 785
    assert genes[:3] == ["HPS6", "TNC", "NR1H2"]  # the file's order is kept


def test_gene_list_messages_say_where_to_get_the_list_and_how_to_save_one(tmp_path):
    missing = tmp_path / "missing.npy"
    with pytest.raises(FileNotFoundError) as error:
        load_gene_list(missing)
    assert str(error.value) == (
        f"Gene list '{missing}' not found (paths are relative to the project root). The HisToGene/Hist2ST lists "
        "(her_hvg_cut_1000.npy, skin_hvg_cut_1000.npy) are in the data/ folder of github.com/biomed-AI/Hist2ST: put "
        "them in data/01_raw/gene_lists/, or point to your file with "
        "--params datasets.<dataset>.gene_panel.path:/path/to/list.npy"
    )
    npy = tmp_path / "objects.npy"
    np.save(npy, np.array(["G1", None], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError) as error:
        load_gene_list(npy)
    assert str(error.value) == (
        f"Gene list '{npy}' is a .npy of Python objects, which only loads with pickle, and pickle can run code: it is "
        "refused. Save the genes as strings (np.save(path, np.asarray(genes, dtype=str))) or as a text file with one "
        "gene a line."
    )
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n")
    with pytest.raises(ValueError) as error:
        load_gene_list(blank)
    assert str(error.value) == f"Gene list '{blank}' is empty: give one gene a line (or a .npy of strings)."
    blank.write_text("G2\n\nG1\n")
    assert load_gene_list(blank) == ["G2", "G1"]


def test_gene_list_panel_logs_what_it_dropped_and_nothing_when_every_gene_is_measured(tmp_path, tiny, caplog):
    sections, _, _ = tiny
    partly = tmp_path / "partly.txt"
    partly.write_text("G3\nNOT_A_GENE\nG1\n")
    select_panel({"rule": "list", "path": str(partly)}, sections, ["S1"])
    assert caplog.messages == [
        f"Gene list {partly}: 1 of 3 genes are not measured in every section and are dropped (kept 2)."
    ]
    caplog.clear()
    measured = tmp_path / "measured.txt"
    measured.write_text("G3\nG1\n")
    assert select_panel({"rule": "list", "path": str(measured)}, sections, ["S1"]) == ["G3", "G1"]
    assert not caplog.messages


def test_panel_errors_say_what_to_fix(tmp_path, tiny):
    sections, _, _ = tiny
    with pytest.raises(ValueError) as unknown:
        select_panel({"rule": "top"}, sections, ["S1"])
    assert str(unknown.value) == (
        "Unknown gene_panel.rule 'top'. Choose 'list' (with a path) or 'hvg_intersection' (with n_top)."
    )
    (tmp_path / "none.txt").write_text("NOPE\n")
    with pytest.raises(ValueError) as empty:
        select_panel({"rule": "list", "path": str(tmp_path / "none.txt")}, sections, ["S1"])
    assert str(empty.value) == (
        "The gene panel (rule 'list') is empty for fitting sections ['S1']: no chosen gene is measured in every "
        "section. Check the gene list matches the data's gene symbols, or raise gene_panel.n_top."
    )


def test_hvg_panel_takes_the_top_1000_by_default(caplog):
    import logging

    import anndata as ad
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    # 1,200 genes of distinct dispersion: identical sections, so the panel is exactly one section's top n
    counts = rng.negative_binomial(np.geomspace(0.2, 50, 1200), 0.3, size=(300, 1200)).astype(np.float32)
    section = ad.AnnData(X=sp.csr_matrix(counts))
    section.var_names = [f"G{g}" for g in range(1200)]
    sections = {"S1": section, "S2": section.copy()}
    with caplog.at_level(logging.INFO, logger="spahgc_kedro.targets"):
        panel = select_panel({"rule": "hvg_intersection"}, sections, ["S1", "S2"])
    assert len(panel) == 1000
    assert "HVG panel: 1000 genes in the top-1000 HVGs of all 2 fitting sections." in caplog.messages


def test_hvg_panel_reads_and_fills_the_callers_cache(tiny):
    sections, _, _ = tiny
    rule = {"rule": "hvg_intersection", "n_top": 10}
    cache: dict[str, set[str]] = {}
    panel = select_panel(rule, sections, ["S1", "S2"], cache)
    assert sorted(cache) == ["S1", "S2"] and all(len(hvgs) == 10 for hvgs in cache.values())
    assert panel == [g for g in sections["S1"].var_names if g in cache["S1"] & cache["S2"]]
    # a cached section is not recomputed: its cached HVGs decide
    cache["S1"] = {"G0", panel[0]}
    assert select_panel(rule, sections, ["S1", "S2"], cache) == [panel[0]]
