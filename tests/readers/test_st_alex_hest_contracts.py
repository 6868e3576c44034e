"""Small contracts of the legacy ST, Alex and HEST readers, each against a hand-written answer: the messages that
name the file and the fix, the tables' format, refused counts and spot positions, and HEST's spot centres."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from native_layouts import BARCODES, COUNTS, GENES, spot_table, write_cscc, write_image, write_mtx, write_positions

from spahgc_kedro.errors import InputDataError
from spahgc_kedro.readers import alex, hest, st_legacy

ST_GENES = ["KRT14", "COL1A1", "MMP1"]
ST_GRID = [(x, y) for y in (5, 6) for x in (10, 11, 12)]  # (x, y) array positions of six legacy ST spots


def _st_spots(extra: dict | None = None) -> pd.DataFrame:
    """A legacy ST spot table of the six ST_GRID spots, 40 px apart, all selected."""
    spots = pd.DataFrame(
        {
            "x": [x + 0.04 for x, _ in ST_GRID],
            "y": [y - 0.03 for _, y in ST_GRID],
            "pixel_x": [20.0 + 40.0 * (x - 10) for x, _ in ST_GRID],
            "pixel_y": [30.0 + 40.0 * (y - 5) for _, y in ST_GRID],
            "selected": [1] * 6,
        }
    )
    return spots.assign(**(extra or {}))


def _st_counts(genes: list[str] = ST_GENES) -> pd.DataFrame:
    """Counts of the six ST_GRID spots, rows named `<x>x<y>`."""
    return pd.DataFrame(
        np.arange(18).reshape(6, 3), index=[f"{x}x{y}" for x, y in ST_GRID], columns=genes, dtype=object
    )


def _cscc(raw: Path, counts: pd.DataFrame | None = None, spots: pd.DataFrame | None = None) -> tuple[Path, Path]:
    """Write section P2_ST_rep1 in the cSCC GEO layout; returns (count table, spot table) paths."""
    return write_cscc(raw, _st_counts() if counts is None else counts, _st_spots() if spots is None else spots)


def test_her2st_section_without_a_count_table_names_the_file_and_the_layout(tmp_path):
    """A her2st section id with no ST-cnts/<id>.tsv.gz is refused naming that file and the her2st layout."""
    root = tmp_path / "data"
    (root / "ST-cnts").mkdir(parents=True)
    _st_counts().to_csv(root / "ST-cnts" / "A1.tsv.gz", sep="\t")
    with pytest.raises(InputDataError) as error:
        st_legacy.read_section(tmp_path, "B1")
    assert str(error.value) == (
        f"Missing count table of B1: '{root / 'ST-cnts' / 'B1.tsv.gz'}'. Expected layout: {st_legacy.HER2ST_LAYOUT}"
    )


def test_cscc_section_without_a_count_table_names_the_pattern_and_the_layout(tmp_path):
    """A cSCC section whose stdata table is absent is refused naming the file pattern and the GEO layout."""
    counts_path, _ = _cscc(tmp_path)
    counts_path.unlink()
    with pytest.raises(InputDataError) as error:
        st_legacy.read_section(tmp_path, "P2_ST_rep1")
    assert str(error.value) == (
        f"Missing count table of P2_ST_rep1: no file matches '{tmp_path / '*_P2_ST_rep1_stdata.tsv*'}'. "
        f"Expected layout: {st_legacy.CSCC_LAYOUT}"
    )


def test_missing_cscc_image_without_a_gzipped_copy_adds_no_hint(tmp_path):
    """With no image and no .jpg.gz beside it, the message goes straight from the folder to the layout."""
    _cscc(tmp_path)
    (tmp_path / "GSM4284316_P2_ST_rep1.jpg").unlink()
    with pytest.raises(InputDataError) as error:
        st_legacy.read_section(tmp_path, "P2_ST_rep1")
    assert str(error.value) == (
        f"Missing image of P2_ST_rep1 in '{tmp_path}'. Expected layout: {st_legacy.CSCC_LAYOUT}"
    )


@pytest.mark.parametrize("marker", ["NA", "nan", ""])
def test_legacy_st_counts_marked_missing_are_refused_not_read_as_zero(tmp_path, marker):
    """A count written as NA, nan or left blank is not a number: refused naming the cell and the file."""
    counts = _st_counts()
    counts.loc["11x5", "COL1A1"] = marker
    counts_path, _ = _cscc(tmp_path, counts=counts)
    with pytest.raises(InputDataError) as error:
        st_legacy.read_section(tmp_path, "P2_ST_rep1")
    assert str(error.value) == (
        f"Non-numeric count '{marker}' for gene 'COL1A1', spot '11x5' in '{counts_path}'. "
        "Counts must be numbers: check the file is the raw count matrix."
    )


def test_legacy_st_tables_are_tab_separated_whatever_their_header_names_hold(tmp_path):
    """The tables are read as tab-separated, not sniffed: a comma inside a gene or column name stays in the name."""
    genes = ["KRT14", "HLA-DRB3,HLA-DRB4", "MMP1"]
    spots = _st_spots({"annotation, pathologist": ["tumour"] * 6})
    _cscc(tmp_path, counts=_st_counts(genes), spots=spots)
    adata = st_legacy.read_section(tmp_path, "P2_ST_rep1")
    assert list(adata.var_names) == genes
    assert list(adata.obs_names) == [f"{x}x{y}" for x, y in ST_GRID]
    np.testing.assert_array_equal(adata.X.toarray(), np.arange(18).reshape(6, 3))
    np.testing.assert_array_equal(adata.obsm["spatial"][:, 0], [20.0, 60.0, 100.0, 20.0, 60.0, 100.0])


def test_two_spots_rounding_onto_one_array_position_are_refused(tmp_path):
    """Spot-table rows at x 10.04 and 9.96 (same y) are both spot 10x5: refused naming the spot table and the fix."""
    spots = _st_spots()
    spots.loc[1, ["x", "y"]] = [9.96, 5.02]
    _, spots_path = _cscc(tmp_path, spots=spots)
    with pytest.raises(InputDataError) as error:
        st_legacy.read_section(tmp_path, "P2_ST_rep1")
    assert str(error.value) == (
        f"1 duplicated spot positions (x, y) in '{spots_path}' (e.g. 10x5). "
        "Each spot must appear once: remove or rename the duplicates."
    )


def test_count_and_spot_tables_with_no_spot_in_common_name_the_section(tmp_path):
    """When no counted spot is in the spot table, the error names the section whose two files do not match."""
    counts = _st_counts()
    counts.index = [f"{x + 20}x{y}" for x, y in ST_GRID]
    _cscc(tmp_path, counts=counts)
    with pytest.raises(InputDataError) as error:
        st_legacy.read_section(tmp_path, "P2_ST_rep1")
    assert str(error.value) == (
        "Section P2_ST_rep1: no spot is in both the count table and the spot table; "
        "check that both files belong to the same section."
    )


def test_alex_sample_without_its_matrix_file_names_the_file_and_the_alex_layout(tmp_path):
    """An Alex sample missing matrix.mtx(.gz) is refused naming the file and the Alex layout, not another's."""
    sample = tmp_path / "CID4465"
    write_mtx(sample / "filtered_count_matrix", COUNTS, GENES, BARCODES)
    write_positions(sample / "spatial" / "tissue_positions_list.csv", spot_table(), header=False)
    write_image(sample / "image.tif")
    (sample / "filtered_count_matrix" / "matrix.mtx").unlink()
    with pytest.raises(InputDataError) as error:
        alex.read_section(tmp_path, "CID4465")
    assert str(error.value) == (
        f"Missing 10x matrix.mtx (or matrix.mtx.gz): '{sample / 'filtered_count_matrix' / 'matrix.mtx'}'. "
        f"Expected layout: {alex.ALEX_LAYOUT}"
    )


def _hest(
    raw: Path, sample_id: str = "TENX7", *, obs_xy: np.ndarray | None = None, obsm_xy=None, in_tissue=None
) -> Path:
    """Write a HEST sample of the six BARCODES spots; centres in obs pxl_* columns and/or obsm['spatial']."""
    import anndata as ad
    import scipy.sparse as sp

    obs = pd.DataFrame({"array_row": [i % 2 for i in range(6)], "array_col": list(range(6))}, index=BARCODES)
    if in_tissue is not None:
        obs["in_tissue"] = in_tissue
    if obs_xy is not None:
        obs["pxl_col_in_fullres"], obs["pxl_row_in_fullres"] = obs_xy[:, 0], obs_xy[:, 1]
    adata = ad.AnnData(X=sp.csr_matrix(COUNTS.astype(np.float32)), obs=obs, var=pd.DataFrame(index=GENES))
    if obsm_xy is not None:
        adata.obsm["spatial"] = obsm_xy
    st_path = raw / "st" / f"{sample_id}.h5ad"
    st_path.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(st_path)
    write_image(raw / "wsis" / f"{sample_id}.tif")
    (raw / "metadata").mkdir(parents=True, exist_ok=True)
    meta = {"pixel_size_um_estimated": 0.5, "spot_diameter": 55.0, "st_technology": "Visium"}
    (raw / "metadata" / f"{sample_id}.json").write_text(json.dumps(meta))
    return st_path


HEST_XY = np.array([[20.0 + 25.0 * i, 30.0 + 40.0 * (i % 2)] for i in range(6)])


def test_hest_section_records_its_sample_id(tmp_path):
    """The section read from st/<id>.h5ad carries <id> as its section id."""
    _hest(tmp_path, obs_xy=HEST_XY)
    adata = hest.read_section(tmp_path, "TENX7")
    assert adata.uns["section_id"] == "TENX7"
    np.testing.assert_array_equal(adata.obsm["spatial"], HEST_XY)


def test_hest_unreadable_h5ad_names_the_file_and_says_to_download_it_again(tmp_path):
    """An st/<id>.h5ad that is not HDF5 is refused naming the file, the reader's reason and the fix."""
    st_path = _hest(tmp_path, obs_xy=HEST_XY)
    st_path.write_bytes(b"not an HDF5 file")
    with pytest.raises(InputDataError, match=rf"^Cannot read '{re.escape(str(st_path))}': .+\. Re-download it\.$"):
        hest.read_section(tmp_path, "TENX7")


def test_hest_centres_that_disagree_name_the_h5ad_file(tmp_path):
    """obsm['spatial'] with x and y swapped against the pxl_* columns is refused naming the sample's file."""
    st_path = _hest(tmp_path, obs_xy=HEST_XY, obsm_xy=HEST_XY[:, ::-1].copy())
    with pytest.raises(InputDataError) as error:
        hest.read_section(tmp_path, "TENX7")
    assert str(error.value) == (
        f"'{st_path}': obsm['spatial'] and obs pxl_col_in_fullres/pxl_row_in_fullres disagree (x/y swapped or "
        "rescaled?); HEST writes them equal. Re-download the sample."
    )


def test_hest_centre_missing_in_both_places_is_reported_as_not_a_number_not_as_a_disagreement(tmp_path):
    """A spot whose centre is NaN both in the pxl_* columns and in obsm agrees with itself: the error names that
    spot as having no centre rather than calling the two copies inconsistent."""
    xy = HEST_XY.copy()
    xy[2] = np.nan
    _hest(tmp_path, obs_xy=xy, obsm_xy=xy.copy())
    with pytest.raises(InputDataError) as error:
        hest.read_section(tmp_path, "TENX7")
    assert str(error.value) == (
        "Section TENX7: 1 of 6 spot centres are not numbers (e.g. spot 'BC02-1'). "
        "Fix or remove those rows of the spot position table."
    )


@pytest.mark.parametrize("nullable", ["obs", "obsm"])
def test_hest_centres_stored_as_nullable_integers_are_float_pixels(tmp_path, nullable):
    """Centres held as pandas nullable integers (pxl_* columns, or an obsm table) are compared and returned as
    float64 pixels."""
    import anndata as ad

    xy = np.array([[150, 200], [270, 360]])
    as_table = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1]}, index=["a", "b"], dtype="Int64")
    adata = ad.AnnData(obs=pd.DataFrame(index=["a", "b"]))
    if nullable == "obs":
        adata.obs["pxl_col_in_fullres"], adata.obs["pxl_row_in_fullres"] = as_table["x"], as_table["y"]
        adata.obsm["spatial"] = xy.astype(np.float64) + 0.25
    else:
        adata.obs["pxl_col_in_fullres"], adata.obs["pxl_row_in_fullres"] = xy[:, 0] + 0.25, xy[:, 1] + 0.25
        adata.obsm["spatial"] = as_table
    centres = hest.spot_centres(adata, tmp_path / "s.h5ad")
    assert centres.dtype == np.float64
    np.testing.assert_array_equal(centres, xy + (0.0 if nullable == "obs" else 0.25))


def test_legacy_st_spots_with_a_blank_or_non_numeric_selected_flag_are_left_out(tmp_path):
    """`selected` blank or '?' is not a selected spot: those rows are dropped, not a crash."""
    _cscc(tmp_path, spots=_st_spots({"selected": ["1", "", "?", "1", "0", "1"]}))
    adata = st_legacy.read_section(tmp_path, "P2_ST_rep1")
    assert list(adata.obs_names) == ["10x5", "10x6", "12x6"]


def test_hest_spots_with_a_missing_in_tissue_flag_are_off_the_tissue(tmp_path):
    """A missing `in_tissue` value is read as off the tissue (as the image_spots reader reads it), not a crash."""
    _hest(tmp_path, obs_xy=HEST_XY, in_tissue=pd.array([1, None, 1, 0, 1, 1], dtype="Int64"))
    adata = hest.read_section(tmp_path, "TENX7")
    assert list(adata.obs_names) == [BARCODES[i] for i in (0, 2, 4, 5)]
    np.testing.assert_array_equal(adata.obsm["spatial"], HEST_XY[[0, 2, 4, 5]])
