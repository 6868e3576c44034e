"""The Xenium reader's small contracts, each against a hand-made answer: the default pseudo-spot, the hex grid's
labels and ties, the option checks, which H&E image is taken, and the messages that name the file and the fix."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from native_layouts import write_10x_h5, write_image

from spahgc_kedro.errors import InputDataError
from spahgc_kedro.readers import xenium

# H&E pixel -> Xenium pixel: 1 H&E pixel = 2 Xenium pixels, H&E pixel (50, 50) at the Xenium origin
ALIGNMENT = np.array([[2.0, 0.0, -100.0], [0.0, 2.0, -100.0], [0.0, 0.0, 1.0]])
GENES = ["ERBB2", "ESR1"]
# cell id -> (x, y) in microns, and its counts of GENES
CELLS = {"a": (10.0, 10.0), "b": (20.0, 30.0), "c": (60.0, 10.0), "d": (10.0, 70.0), "e": (35.0, 45.0)}
COUNTS = {"a": [1, 10], "b": [2, 20], "c": [3, 30], "d": [4, 40], "e": [5, 50]}


def write_section(folder: Path, cells: dict = CELLS, matrix_ids: list[str] | None = None) -> Path:
    """cells.parquet, cell_feature_matrix.h5, one 300 x 300 H&E and its alignment CSV."""
    folder.mkdir(parents=True)
    pd.DataFrame(
        {
            "cell_id": list(cells),
            "x_centroid": [x for x, _ in cells.values()],
            "y_centroid": [y for _, y in cells.values()],
        }
    ).to_parquet(folder / "cells.parquet", index=False)
    ids = list(CELLS) if matrix_ids is None else matrix_ids
    write_10x_h5(folder / "cell_feature_matrix.h5", np.array([COUNTS[c] for c in CELLS]), GENES, ids)
    write_image(folder / "he_image.ome.tif", size=(300, 300))
    np.savetxt(folder / "he_imagealignment.csv", ALIGNMENT, delimiter=",")
    return folder


def he_pixels(xy_um) -> np.ndarray:
    """Microns -> Xenium pixels (0.2125 um) -> H&E pixels through the inverse alignment, by hand."""
    return (np.asarray(xy_um, dtype=float) / 0.2125 + 100.0) / 2.0


def spot(adata, name: str) -> tuple[list[float], list[float], int]:
    """A pseudo-spot's summed counts, its centre in H&E pixels and its number of cells."""
    row = list(adata.obs_names).index(name)
    return adata.X[row].toarray().ravel().tolist(), adata.obsm["spatial"][row], adata.obs["n_cells"].iloc[row]


def test_default_pseudo_spot_is_a_55_um_visium_spot(tmp_path):
    """Without `spot_um`, cells pool into 55 um squares centred at 27.5 um, and the spot diameter says 55 um."""
    write_section(tmp_path / "X1")
    adata = xenium.read_section(tmp_path, "X1")
    # 55 um bins: a, b, e in (0, 0); c in (0, 1); d in (1, 0)
    assert sorted(adata.obs_names) == ["X1_0_0", "X1_0_1", "X1_1_0"]
    counts, centre, n_cells = spot(adata, "X1_0_0")
    assert counts == [1 + 2 + 5, 10 + 20 + 50]
    np.testing.assert_allclose(centre, he_pixels([27.5, 27.5]))
    assert n_cells == 3
    np.testing.assert_allclose(spot(adata, "X1_0_1")[1], he_pixels([82.5, 27.5]))
    np.testing.assert_allclose(spot(adata, "X1_1_0")[1], he_pixels([27.5, 82.5]))
    # one H&E pixel is two Xenium pixels of 0.2125 um
    assert adata.uns["spot_diameter_px"] == pytest.approx(55.0 / 0.425)
    assert adata.uns["section_id"] == "X1"
    assert adata.obs["n_cells"].dtype.kind == "i"


def test_hex_pseudo_spots_are_named_by_integer_row_and_column(tmp_path):
    """On the hex grid (50 um apart, rows 25*sqrt(3) um apart, odd rows shifted 25 um), each cell joins its
    nearest centre, and the pseudo-spot is named `<section>_<row>_<col>` in whole numbers."""
    write_section(tmp_path / "X1")
    adata = xenium.read_section(tmp_path, "X1", spot_um=50.0, grid="hex")
    height = 25.0 * np.sqrt(3)
    # a -> (0, 0) at (0, 0); c -> (0, 1) at (50, 0); b, e -> (1, 0) at (25, h); d -> (2, 0) at (0, 2h)
    expected = {
        "X1_0_0": ([1, 10], [0.0, 0.0], 1),
        "X1_0_1": ([3, 30], [50.0, 0.0], 1),
        "X1_1_0": ([2 + 5, 20 + 50], [25.0, height], 2),
        "X1_2_0": ([4, 40], [0.0, 2 * height], 1),
    }
    assert sorted(adata.obs_names) == sorted(expected)
    for name, (counts, centre_um, n_cells) in expected.items():
        got_counts, got_centre, got_n = spot(adata, name)
        assert got_counts == counts
        np.testing.assert_allclose(got_centre, he_pixels(centre_um))
        assert got_n == n_cells
    assert adata.obs["array_row"].tolist() == [int(n.split("_")[1]) for n in adata.obs_names]


def test_hex_cell_equidistant_from_two_centres_joins_the_lower_row_then_the_lower_column():
    """Ties go to the first centre: the lower row across rows, the lower column within a row."""
    height = 50.0 * np.sqrt(3) / 2
    # (25, 5) is as far from (0, 0) as from (50, 0); (12.5, h/2) as far from (0, 0) as from (25, h), row 1 col 0
    xy = np.array([[25.0, 5.0], [12.5, height / 2]])
    rowcol, centres = xenium.pseudo_spot_grid(xy, 50.0, "hex")
    assert rowcol.tolist() == [[0, 0], [0, 0]]
    np.testing.assert_array_equal(centres, [[0.0, 0.0], [0.0, 0.0]])


def test_pseudo_spot_options_out_of_range_are_refused_with_the_values(tmp_path):
    """`spot_um` must be above 0 and `min_cells` at least 1, each on its own; the message gives what was set."""
    write_section(tmp_path / "X1")
    need = "Xenium pseudo-spots need reader_options grid in ('square', 'hex'), spot_um > 0 and min_cells >= 1 "
    with pytest.raises(InputDataError) as error:
        xenium.read_section(tmp_path, "X1", spot_um=0)
    assert str(error.value) == need + "(got grid='square', spot_um=0, min_cells=1)."
    with pytest.raises(InputDataError) as error:
        xenium.read_section(tmp_path, "X1", min_cells=0)
    assert str(error.value) == need + "(got grid='square', spot_um=55.0, min_cells=0)."


def test_one_micron_pseudo_spots_hold_one_cell_each(tmp_path):
    """A pseudo-spot as small as 1 um is allowed: each cell then has its own, centred half a micron in."""
    write_section(tmp_path / "X1")
    adata = xenium.read_section(tmp_path, "X1", spot_um=1.0)
    assert sorted(adata.obs_names) == ["X1_10_10", "X1_10_60", "X1_30_20", "X1_45_35", "X1_70_10"]
    assert spot(adata, "X1_45_35")[0] == COUNTS["e"]
    np.testing.assert_allclose(spot(adata, "X1_45_35")[1], he_pixels([35.5, 45.5]))


def test_missing_section_folder_or_count_matrix_names_the_path_and_the_layout(tmp_path):
    """An absent section folder, or a section without its cell matrix, is named with Xenium's expected layout."""
    with pytest.raises(InputDataError) as error:
        xenium.read_section(tmp_path, "X9")
    assert str(error.value) == (
        f"Missing folder of section X9: '{tmp_path / 'X9'}'. Expected layout: {xenium.XENIUM_LAYOUT}"
    )
    folder = write_section(tmp_path / "X1")
    (folder / "cell_feature_matrix.h5").unlink()
    with pytest.raises(InputDataError) as error:
        xenium.read_section(tmp_path, "X1")
    assert str(error.value) == (
        f"Missing count matrix of X1 (.h5 file or mtx folder): '{folder / 'cell_feature_matrix'}'. "
        f"Expected layout: {xenium.XENIUM_LAYOUT}"
    )


def test_cell_matrix_and_cell_table_sharing_no_cell_is_named(tmp_path):
    """When no cell id of the matrix is in the cell table, the section says so."""
    write_section(tmp_path / "X1", matrix_ids=["p", "q", "r", "s", "t"])
    with pytest.raises(InputDataError) as error:
        xenium.read_section(tmp_path, "X1")
    assert str(error.value) == "Section X1: no cell id of the cell matrix is in the cell table."


def test_unreadable_or_repeating_cell_table_names_the_file(tmp_path):
    """A cells.parquet that is not parquet, or that repeats a cell id, is named with the fix."""
    folder = tmp_path / "X1"
    folder.mkdir()
    path = folder / "cells.parquet"
    path.write_bytes(b"not a parquet file")
    with pytest.raises(InputDataError) as error:
        xenium.read_cells(folder)
    message = str(error.value)
    assert message.startswith(f"Cannot read the cell table '{path}': ")
    assert message.endswith(". Re-export it.")
    pd.DataFrame({"cell_id": ["a", "b", "a"], "x_centroid": [1.0, 2.0, 3.0], "y_centroid": [1.0, 2.0, 3.0]}).to_parquet(
        path, index=False
    )
    with pytest.raises(InputDataError, match=rf"^1 duplicated cell ids in '{re.escape(str(path))}' \(e\.g\. a\)\. "):
        xenium.read_cells(folder)


def test_missing_alignment_says_where_to_export_it(tmp_path):
    """Without an alignment CSV, the message names the folder, Xenium Explorer's export and the option."""
    folder = write_section(tmp_path / "X1")
    (folder / "he_imagealignment.csv").unlink()
    with pytest.raises(InputDataError) as error:
        xenium.read_alignment(folder, None)
    assert str(error.value) == (
        f"No H&E alignment file (*he_imagealignment.csv) in '{folder}': export it from Xenium Explorer "
        "(Image Alignment), or give the 3x3 H&E-pixel -> Xenium-pixel matrix in conf/local/parameters.yml as "
        "datasets: {<name>: {reader_options: {alignment: [[a, b, c], [d, e, f], [0, 0, 1]]}}}."
    )


def test_alignment_file_with_a_header_names_the_file_and_the_expected_matrix(tmp_path):
    """An alignment CSV with a header line is refused naming the file and what it must hold, not a bare ValueError."""
    folder = write_section(tmp_path / "X1")
    path = folder / "he_imagealignment.csv"
    path.write_text("a,b,c\n" + path.read_text())
    with pytest.raises(
        InputDataError, match=rf"^The H&E alignment file '{re.escape(str(path))}' holds values that"
    ) as error:
        xenium.read_alignment(folder, None)
    assert str(error.value).endswith("it must be the 3x3 matrix Xenium Explorer exports, without a header.")


def test_alignment_option_with_a_blank_entry_is_not_a_matrix(tmp_path):
    """A null entry in `reader_options.alignment` is refused as not an invertible matrix, not a crash."""
    with pytest.raises(InputDataError, match=r"^The H&E alignment in reader_options\.alignment is not an invertible"):
        xenium.read_alignment(tmp_path, [[2, 0, -100], [0, None, -100], [0, 0, 1]])


@pytest.mark.parametrize("name", ["he_image.tif", "slide_HE.tif"])
def test_image_named_as_the_h_and_e_is_taken_over_another_image(tmp_path, name):
    """Of two images, the one whose name holds `he_image`, or whose stem holds `_he` in any case, is the H&E."""
    write_image(tmp_path / name, size=(20, 20))
    write_image(tmp_path / "overview.png", size=(20, 20))
    assert xenium._image(tmp_path).name == name


def test_folder_without_an_h_and_e_says_none_was_found(tmp_path):
    """With only morphology images, the message says `none` and what to keep."""
    write_image(tmp_path / "morphology_focus.ome.tif", size=(20, 20))
    with pytest.raises(InputDataError) as error:
        xenium._image(tmp_path)
    assert str(error.value) == (
        f"Expected one H&E image in '{tmp_path}', found none: keep the post-Xenium H&E "
        "(morphology*.ome.tif files are ignored)."
    )
