"""The Visium and Visium HD readers' small contracts, each against a hand-made answer: file layouts, text ids,
the scale fallbacks and the messages that tell the user which file to fix."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from native_layouts import BARCODES, COUNTS, GENES, spot_table, write_10x_h5, write_image, write_mtx, write_positions

from spahgc_kedro.errors import InputDataError
from spahgc_kedro.readers import visium, visium_hd


def _section(raw: Path, name: str = "block1", *, outs: bool = True, image: bool = True) -> Path:
    """One Visium section as Space Ranger leaves it (h5 matrix, headerless spot table), plus its image; the
    folder holding Space Ranger's files is returned."""
    root = raw / name / "outs" if outs else raw / name
    write_10x_h5(root / "filtered_feature_bc_matrix.h5", COUNTS, GENES, BARCODES)
    write_positions(root / "spatial" / "tissue_positions_list.csv", spot_table(), header=False)
    (root / "spatial" / "scalefactors_json.json").write_text(json.dumps({"spot_diameter_fullres": 11.0}))
    if image:
        write_image(raw / name / "full_res.jpg")
    return root


def _message(error: pytest.ExceptionInfo) -> str:
    """The text the user reads."""
    return str(error.value)


# --- the 10x matrix ---------------------------------------------------------------------------------------------


def test_space_ranger_1_mtx_folder_without_barcodes_names_the_barcodes_file(tmp_path):
    """A genes.tsv stands in for features.tsv only: a missing barcodes.tsv is still reported as missing."""
    import scipy.io
    import scipy.sparse as sp

    folder = tmp_path / "filtered_feature_bc_matrix"
    folder.mkdir()
    scipy.io.mmwrite(folder / "matrix.mtx", sp.coo_matrix(COUNTS.T))
    (folder / "genes.tsv").write_text("".join(f"ENSG{i}\t{g}\n" for i, g in enumerate(GENES)))
    with pytest.raises(InputDataError) as error:
        visium.read_mtx_folder(folder, "the layout")
    assert _message(error) == (
        f"Missing 10x barcodes.tsv (or barcodes.tsv.gz): '{folder / 'barcodes.tsv'}'. Expected layout: the layout"
    )


def test_mtx_barcodes_and_gene_names_that_look_like_numbers_keep_their_text(tmp_path):
    """Hand-made matrix folders with numeric ids ("0001", "007") keep them as written, leading zeros included."""
    barcodes = [f"{i:04d}" for i in range(1, 7)]
    genes = ["007", "010", "0100", "2"]
    folder = write_mtx(tmp_path / "m", COUNTS, genes, barcodes)
    counts, got_genes, got_barcodes = visium.read_mtx_folder(folder, "layout")
    assert got_genes == genes
    assert got_barcodes == barcodes
    np.testing.assert_array_equal(counts.toarray(), COUNTS)


def test_mtx_barcode_is_the_first_tab_separated_column(tmp_path):
    """barcodes.tsv is tab-separated: extra columns after a tab are not part of the barcode."""
    folder = write_mtx(tmp_path / "m", COUNTS, GENES, BARCODES)
    (folder / "barcodes.tsv").write_text("".join(f"{b}\tsample_A\n" for b in BARCODES))
    assert visium.read_mtx_folder(folder, "layout")[2] == BARCODES


def test_unreadable_matrix_market_file_is_named_with_the_fix(tmp_path):
    """A matrix.mtx that is not Matrix Market fails naming the file and saying to re-download it."""
    folder = write_mtx(tmp_path / "m", COUNTS, GENES, BARCODES)
    (folder / "matrix.mtx").write_text("not a matrix\n1 2 3\n")
    pattern = rf"^Cannot read the Matrix Market file '{re.escape(str(folder / 'matrix.mtx'))}': .+\. Re-download it\.$"
    with pytest.raises(InputDataError, match=pattern):
        visium.read_mtx_folder(folder, "layout")


def test_unreadable_10x_h5_is_named_with_the_fix(tmp_path):
    """A filtered_feature_bc_matrix.h5 that is not HDF5 fails naming the file and the fix."""
    h5 = tmp_path / "filtered_feature_bc_matrix.h5"
    h5.write_bytes(b"not an hdf5 file")
    pattern = rf"^Cannot read the 10x matrix '{re.escape(str(h5))}': .+\. Re-export or re-download it\.$"
    with pytest.raises(InputDataError, match=pattern):
        visium.read_counts(tmp_path, "S1", "layout")


def test_missing_count_matrix_names_the_section_and_the_layout(tmp_path):
    """Neither the .h5 nor the mtx folder: the message names the section, the path and the Visium layout."""
    root = _section(tmp_path)
    (root / "filtered_feature_bc_matrix.h5").unlink()
    with pytest.raises(InputDataError) as error:
        visium.read_section(tmp_path, "block1")
    assert _message(error) == (
        f"Missing count matrix of block1 (.h5 file or mtx folder): '{root / 'filtered_feature_bc_matrix'}'. "
        f"Expected layout: {visium.VISIUM_LAYOUT}"
    )


def test_mtx_folder_missing_a_file_names_the_callers_layout(tmp_path):
    """A file missing inside the mtx folder is reported with the layout the caller expects."""
    folder = write_mtx(tmp_path / "filtered_feature_bc_matrix", COUNTS, GENES, BARCODES)
    (folder / "features.tsv").unlink()
    with pytest.raises(InputDataError) as error:
        visium.read_counts(tmp_path, "S1", "the layout")
    assert _message(error) == (
        f"Missing 10x features.tsv (or features.tsv.gz): '{folder / 'features.tsv'}'. Expected layout: the layout"
    )


@pytest.mark.filterwarnings("ignore:Observation names are not unique")
def test_duplicated_count_barcodes_name_the_matrix_file(tmp_path):
    """A barcode twice in the count matrix fails naming the .h5 file it came from."""
    root = _section(tmp_path)
    h5 = root / "filtered_feature_bc_matrix.h5"
    write_10x_h5(h5, COUNTS, GENES, [*BARCODES[:5], BARCODES[0]])
    with pytest.raises(InputDataError, match=rf"^1 duplicated barcodes in '{re.escape(str(h5))}' \(e\.g\. BC00-1\)"):
        visium.read_section(tmp_path, "block1")


# --- the spot table ---------------------------------------------------------------------------------------------


def test_unreadable_parquet_spot_table_is_named_with_the_fix(tmp_path):
    """A tissue_positions.parquet that is not parquet fails naming the file and saying to re-export it."""
    path = tmp_path / "tissue_positions.parquet"
    path.write_bytes(b"not parquet")
    pattern = rf"^Cannot read the spot table '{re.escape(str(path))}': .+\. Re-export it with Space Ranger\.$"
    with pytest.raises(InputDataError, match=pattern):
        visium.read_tissue_positions(path)


def test_headerless_spot_table_with_two_columns_is_refused_by_its_column_count(tmp_path):
    """A headerless row with only barcode and in_tissue fails with the column-count message."""
    path = tmp_path / "tissue_positions_list.csv"
    path.write_text("BC00-1,1\nBC01-1,1\n")
    with pytest.raises(InputDataError) as error:
        visium.read_tissue_positions(path)
    assert _message(error) == (
        f"Spot table '{path}' has 2 columns; expected the six Space Ranger columns "
        f"{', '.join(visium.POSITION_COLUMNS)}."
    )


def test_reads_a_space_ranger_3_parquet_spot_table(tmp_path):
    """With only spatial/tissue_positions.parquet, its in-tissue spots are read at (x, y) = (col, row) pixels."""
    root = _section(tmp_path)
    (root / "spatial" / "tissue_positions_list.csv").unlink()
    spot_table().to_parquet(root / "spatial" / "tissue_positions.parquet", index=False)
    adata = visium.read_section(tmp_path, "block1")
    assert list(adata.obs_names) == BARCODES
    # spot i: x = 20 + 25 i, y = 30 + 40 (i % 2)
    np.testing.assert_array_equal(adata.obsm["spatial"], [[20.0 + 25 * i, 30.0 + 40 * (i % 2)] for i in range(6)])
    assert adata.uns["section_id"] == "block1"


def test_missing_spot_table_lists_the_three_names_it_looked_for(tmp_path):
    """No spot table: the message names the section, the three accepted file names and the spatial folder."""
    root = _section(tmp_path)
    (root / "spatial" / "tissue_positions_list.csv").unlink()
    with pytest.raises(InputDataError) as error:
        visium.read_section(tmp_path, "block1")
    assert _message(error) == (
        "Missing spot table of block1: none of tissue_positions_list.csv, tissue_positions.csv, "
        f"tissue_positions.parquet is in '{root / 'spatial'}'. Expected layout: {visium.VISIUM_LAYOUT}"
    )


def test_missing_scale_factors_name_the_section_and_the_layout(tmp_path):
    """No scalefactors_json.json: the message names the section, the path and the Visium layout."""
    root = _section(tmp_path)
    path = root / "spatial" / "scalefactors_json.json"
    path.unlink()
    with pytest.raises(InputDataError) as error:
        visium.read_section(tmp_path, "block1")
    assert _message(error) == f"Missing scale factors of block1: '{path}'. Expected layout: {visium.VISIUM_LAYOUT}"


def test_no_shared_spot_names_the_section(tmp_path):
    """Counts and spot table without a barcode in common fail naming the section."""
    root = _section(tmp_path)
    table = spot_table()
    table["barcode"] = [f"OTHER{i}-1" for i in range(len(table))]
    write_positions(root / "spatial" / "tissue_positions_list.csv", table, header=False)
    with pytest.raises(InputDataError, match=r"^Section block1: no spot is in both the count table"):
        visium.read_section(tmp_path, "block1")


# --- the scale ----------------------------------------------------------------------------------------------------


def test_without_a_spot_diameter_the_100_um_spot_pitch_gives_the_scale(tmp_path):
    """No diameter (as in Alex copies without scale factors): spots 50 px apart at a 100 um pitch give 2 um per
    pixel, and the 55 um spot is 27.5 px wide."""
    image = write_image(tmp_path / "he.png", size=(300, 300))
    positions = pd.DataFrame(
        {
            "in_tissue": 1,
            "array_row": [0, 0, 0, 1, 1, 1],
            "array_col": [0, 2, 4, 1, 3, 5],
            "pxl_row_in_fullres": [100.0, 100.0, 100.0, 150.0, 150.0, 150.0],
            "pxl_col_in_fullres": [50.0, 100.0, 150.0, 75.0, 125.0, 175.0],
        },
        index=pd.Index(BARCODES),
    )
    adata = visium.assemble_visium(
        COUNTS,
        GENES,
        BARCODES,
        positions,
        section_id="S1",
        image=image,
        counts_source=tmp_path / "m",
        spot_diameter_px=float("nan"),
    )
    assert adata.uns["spot_spacing_px"] == pytest.approx(50.0)
    assert adata.uns["microns_per_pixel"] == pytest.approx(2.0)
    assert adata.uns["spot_diameter_px"] == pytest.approx(27.5)


# --- sections and images ------------------------------------------------------------------------------------------


def test_missing_section_folder_names_the_section_and_the_layout(tmp_path):
    """Reading a section that is not there names its folder and the Visium layout."""
    with pytest.raises(InputDataError) as error:
        visium.read_section(tmp_path, "S9")
    assert (
        _message(error) == f"Missing folder of section S9: '{tmp_path / 'S9'}'. Expected layout: {visium.VISIUM_LAYOUT}"
    )


def test_discovering_sections_in_a_missing_folder_gives_the_layout(tmp_path):
    """A raw_dir that does not exist is an input error naming it and the layout, not a FileNotFoundError."""
    with pytest.raises(InputDataError) as error:
        visium.discover_sections(tmp_path / "absent")
    assert _message(error) == (
        f"No Visium sections found in '{tmp_path / 'absent'}'. Expected layout: {visium.VISIUM_LAYOUT}"
    )


def test_images_csv_finds_sections_with_numeric_names(tmp_path):
    """Sections named by numbers (as DLPFC's 151673) are matched in images.csv as text."""
    _section(tmp_path, "151673", image=False)
    image = write_image(tmp_path / "images" / "151673_full.tif")
    (tmp_path / "images.csv").write_text("section,image\n151673,images/151673_full.tif\n")
    adata = visium.read_section(tmp_path, "151673")
    assert adata.uns["image_path"] == str(image.resolve())


def test_images_csv_without_its_columns_is_refused(tmp_path):
    """An images.csv without the section,image columns fails saying which columns it needs."""
    _section(tmp_path)
    listing = tmp_path / "images.csv"
    listing.write_text("sample,path\nblock1,images/block1.tif\n")
    with pytest.raises(InputDataError) as error:
        visium.read_section(tmp_path, "block1")
    assert _message(error) == f"'{listing}' must have the columns section,image (one row per section)."


def test_missing_listed_image_names_the_listing_and_the_layout(tmp_path):
    """An image listed in images.csv but absent is reported with the section, the listing and the layout."""
    _section(tmp_path, image=False)
    listing = tmp_path / "images.csv"
    listing.write_text("section,image\nblock1,images/gone.tif\n")
    with pytest.raises(InputDataError) as error:
        visium.read_section(tmp_path, "block1")
    assert _message(error) == (
        f"Missing full-resolution image of block1 listed in '{listing}': '{tmp_path / 'images' / 'gone.tif'}'. "
        f"Expected layout: {visium.VISIUM_LAYOUT}"
    )


def test_section_without_outs_finds_its_image_among_space_rangers_files(tmp_path):
    """Space Ranger's files directly in the section folder (no outs/): the .h5 next to the image is not an image."""
    _section(tmp_path, outs=False)
    adata = visium.read_section(tmp_path, "block1")
    assert adata.uns["image_path"] == str((tmp_path / "block1" / "full_res.jpg").resolve())
    assert adata.n_obs == 6


def test_two_images_in_a_section_folder_are_refused_naming_both(tmp_path):
    """Two image files next to outs/ are ambiguous: the message lists both and the two ways to fix it."""
    _section(tmp_path)
    write_image(tmp_path / "block1" / "a_lowres.png")
    with pytest.raises(InputDataError) as error:
        visium.read_section(tmp_path, "block1")
    assert _message(error) == (
        f"Several image files in '{tmp_path / 'block1'}' (a_lowres.png, full_res.jpg): keep only the "
        f"full-resolution H&E, or name it in '{tmp_path / 'images.csv'}' (columns section,image)."
    )


# --- Visium HD ----------------------------------------------------------------------------------------------------

HD_GENES = ["ERBB2", "ESR1"]


def _hd_section(raw: Path, scale: dict, *, outs: bool = True, barcodes: list[str] | None = None) -> Path:
    """A Visium HD section with one 16 um bin folder: a 2 x 3 grid of bins 64 px apart, all in tissue; the bin
    folder is returned."""
    root = raw / "HD1" / "outs" if outs else raw / "HD1"
    folder = root / "binned_outputs" / "square_016um"
    grid = [(r, c) for r in range(2) for c in range(3)]
    ids = [f"s_016um_{r:05d}_{c:05d}-1" for r, c in grid]
    table = pd.DataFrame(
        {
            "barcode": ids,
            "in_tissue": 1,
            "array_row": [r for r, _ in grid],
            "array_col": [c for _, c in grid],
            "pxl_row_in_fullres": [40.0 + 64.0 * r for r, _ in grid],
            "pxl_col_in_fullres": [60.0 + 64.0 * c for _, c in grid],
        }
    )
    (folder / "spatial").mkdir(parents=True)
    table.to_parquet(folder / "spatial" / "tissue_positions.parquet", index=False)
    (folder / "spatial" / "scalefactors_json.json").write_text(json.dumps(scale))
    counts = np.arange(12).reshape(6, 2) + 1
    write_10x_h5(folder / "filtered_feature_bc_matrix.h5", counts, HD_GENES, barcodes or ids)
    write_image(raw / "HD1" / "HD1_full.tif", size=(400, 300))
    return folder


def test_hd_section_without_outs_is_discovered_and_read(tmp_path):
    """binned_outputs/ directly in the section folder (no outs/) is a Visium HD section."""
    _hd_section(tmp_path, {"spot_diameter_fullres": 64.0, "microns_per_pixel": 0.25}, outs=False)
    assert visium_hd.discover_sections(tmp_path) == ["HD1"]
    assert visium_hd.read_section(tmp_path, "HD1").n_obs == 6


def test_hd_scale_is_bin_size_over_bin_width_without_microns_per_pixel(tmp_path):
    """No microns_per_pixel: 16 um bins 64 px wide give 0.25 um per pixel (not the 55 um Visium spot's scale)."""
    _hd_section(tmp_path, {"spot_diameter_fullres": 64.0})
    adata = visium_hd.read_section(tmp_path, "HD1")
    assert adata.uns["microns_per_pixel"] == pytest.approx(0.25)
    assert adata.uns["spot_diameter_px"] == pytest.approx(64.0)


def test_hd_scale_is_bin_size_over_bin_spacing_without_a_usable_diameter(tmp_path):
    """A non-finite bin width and no microns_per_pixel: 16 um bins 64 px apart still give 0.25 um per pixel."""
    _hd_section(tmp_path, {"spot_diameter_fullres": float("nan")})
    adata = visium_hd.read_section(tmp_path, "HD1")
    assert adata.uns["spot_spacing_px"] == pytest.approx(64.0)
    assert adata.uns["microns_per_pixel"] == pytest.approx(0.25)
    assert adata.uns["spot_diameter_px"] == pytest.approx(64.0)


def test_hd_missing_count_matrix_and_scale_factors_name_the_section_and_the_hd_layout(tmp_path):
    """Missing bin files are reported with the section and the Visium HD layout."""
    folder = _hd_section(tmp_path, {"spot_diameter_fullres": 64.0, "microns_per_pixel": 0.25})
    scale = folder / "spatial" / "scalefactors_json.json"
    scale.unlink()
    with pytest.raises(InputDataError) as error:
        visium_hd.read_section(tmp_path, "HD1")
    assert _message(error) == f"Missing scale factors of HD1: '{scale}'. Expected layout: {visium_hd.VISIUM_HD_LAYOUT}"
    (folder / "filtered_feature_bc_matrix.h5").unlink()
    with pytest.raises(InputDataError) as error:
        visium_hd.read_section(tmp_path, "HD1")
    assert _message(error) == (
        f"Missing count matrix of HD1 (.h5 file or mtx folder): '{folder / 'filtered_feature_bc_matrix'}'. "
        f"Expected layout: {visium_hd.VISIUM_HD_LAYOUT}"
    )


@pytest.mark.filterwarnings("ignore:Observation names are not unique")
def test_hd_duplicated_bin_barcodes_name_the_matrix_file(tmp_path):
    """A bin barcode twice in the HD count matrix fails naming the .h5 file."""
    dup = ["b0", "b1", "b2", "b3", "b4", "b0"]
    folder = _hd_section(tmp_path, {"spot_diameter_fullres": 64.0, "microns_per_pixel": 0.25}, barcodes=dup)
    h5 = re.escape(str(folder / "filtered_feature_bc_matrix.h5"))
    with pytest.raises(InputDataError, match=rf"^1 duplicated barcodes in '{h5}' \(e\.g\. b0\)"):
        visium_hd.read_section(tmp_path, "HD1")


def test_headerless_spot_table_with_float_flags_keeps_its_first_spot(tmp_path):
    """A header-less table re-saved with floats ("1.0") has no header row: its first in-tissue spot is kept."""
    path = tmp_path / "tissue_positions_list.csv"
    path.write_text("BC00-1,1.0,0.0,0.0,10.0,20.0\nBC01-1,1,0,2,10,60\nBC02-1,0,1,1,50,40\n")
    table = visium.read_tissue_positions(path)
    assert list(table.index) == ["BC00-1", "BC01-1"]
    np.testing.assert_array_equal(table["pxl_col_in_fullres"], [20.0, 60.0])
