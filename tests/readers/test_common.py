"""The checks and the standard section every reader shares (docs/design.md), against hand-computed answers."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from native_layouts import write_image

from spahgc_kedro.errors import InputDataError
from spahgc_kedro.readers import common


def test_build_section_writes_the_standard_types_and_keeps_duplicated_genes_apart(tmp_path):
    image = write_image(tmp_path / "he.tif", size=(100, 80))
    counts = np.array([[1, 0, 2], [0, 3, 4]], dtype=np.int64)
    adata = common.build_section(
        counts,
        ["ERBB2", "GRB7", "ERBB2"],
        ["a", "b"],
        np.array([[10, 20], [40, 20]], dtype=np.int32),
        np.array([[0.0, 1.0], [0.0, 3.0]]),
        section_id="S1",
        platform="visium",
        image=image,
        spot_diameter_px=12.0,
    )
    assert adata.X.format == "csr" and adata.X.dtype == np.float32
    np.testing.assert_array_equal(adata.X.toarray(), counts)
    assert list(adata.var_names) == ["ERBB2", "GRB7", "ERBB2-1"]
    # whole-number float array coordinates (as from spot names or a grid) become int64 columns
    assert adata.obs["array_row"].dtype == np.int64 and adata.obs["array_col"].dtype == np.int64
    assert adata.obs["array_col"].tolist() == [1, 3]
    assert adata.obsm["spatial"].dtype == np.float64
    assert adata.uns["spot_spacing_px"] == 30.0 and adata.uns["spot_diameter_px"] == 12.0
    assert adata.uns["section_id"] == "S1" and adata.uns["image_size"] == [100, 80]


def test_a_spot_centre_that_is_not_a_number_is_named(tmp_path):
    image = write_image(tmp_path / "he.tif", size=(100, 80))
    xy = np.array([[10.0, 20.0], [np.nan, 20.0], [30.0, np.inf]])
    with pytest.raises(InputDataError) as error:
        common.build_section(
            np.ones((3, 1)), ["G"], ["a", "b", "c"], xy, np.zeros((3, 2)), section_id="S1", platform="v", image=image
        )
    assert str(error.value) == (
        "Section S1: 2 of 3 spot centres are not numbers (e.g. spot 'b'). Fix or remove those rows of the spot "
        "position table."
    )


def test_a_spot_centre_outside_the_image_names_the_section_and_the_image(tmp_path):
    image = write_image(tmp_path / "he.tif", size=(100, 80))
    xy = np.array([[10.0, 20.0], [100.0, 20.0]])
    with pytest.raises(InputDataError) as error:
        common.build_section(
            np.ones((2, 1)), ["G"], ["a", "b"], xy, np.zeros((2, 2)), section_id="S1", platform="v", image=image
        )
    assert str(error.value).startswith(f"Section S1: 1 of 2 spot centres lie outside the 100 x 80 px image '{image}'")


def test_spot_spacing_is_the_median_nearest_neighbour_distance():
    assert np.isnan(common.spot_spacing(np.array([[0.0, 0.0]])))
    assert common.spot_spacing(np.array([[0.0, 0.0], [3.0, 4.0]])) == 5.0
    # nearest distances 1, 1, 2 (not the second-nearest 3)
    assert common.spot_spacing(np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])) == 1.0


def test_counts_are_numbers_with_gaps_as_zero_or_the_bad_cell_is_named(tmp_path):
    numbers = pd.DataFrame({"G1": [1.0, np.nan], "G2": [2, 3]}, index=["a", "b"])
    assert common.numeric_counts(numbers, tmp_path).to_numpy().tolist() == [[1, 2], [0, 3]]
    text = pd.DataFrame({"G1": ["1", None], "G2": ["2", "3"]}, index=["a", "b"])
    assert common.numeric_counts(text, tmp_path).to_numpy().tolist() == [[1, 2], [0, 3]]
    text.loc["b", "G2"] = "x3"
    with pytest.raises(InputDataError) as error:
        common.numeric_counts(text, tmp_path / "c.tsv")
    assert str(error.value) == (
        f"Non-numeric count 'x3' for gene 'G2', spot 'b' in '{tmp_path / 'c.tsv'}'. Counts must be numbers: check "
        "the file is the raw count matrix."
    )


def test_spot_id_checks_name_the_section_and_the_file(tmp_path, caplog):
    with pytest.raises(InputDataError) as error:
        common.check_unique(pd.Index(["a", "b", "a", "c", "c"]), "barcodes", tmp_path / "p.csv")
    assert str(error.value) == (
        f"2 duplicated barcodes in '{tmp_path / 'p.csv'}' (e.g. a, c). Each spot must appear once: remove or rename "
        "the duplicates."
    )
    # a long list is cut to three examples
    with pytest.raises(InputDataError, match=r"^4 duplicated barcodes in '.*' \(e\.g\. a, b, c\)\. Each"):
        common.check_unique(pd.Index(list("abcd") * 2), "barcodes", tmp_path / "p.csv")
    with caplog.at_level(logging.WARNING):
        kept = common.intersect_spots(pd.Index(["c", "a", "b"]), pd.Index(["b", "c", "d"]), "S1")
    assert list(kept) == ["c", "b"]  # in count-table order
    assert "Section S1: dropped 1 spots with counts but no coordinates and 1 with coordinates" in caplog.text
    with pytest.raises(InputDataError) as error:
        common.intersect_spots(pd.Index(["a"]), pd.Index(["b"]), "S1")
    assert str(error.value) == (
        "Section S1: no spot is in both the count table and the spot table; check that both files belong to the "
        "same section."
    )


def test_an_unreadable_table_is_named(tmp_path):
    path = tmp_path / "t.csv.gz"
    path.write_bytes(b"not gzip")
    with pytest.raises(
        InputDataError,
        match=rf"^Cannot read '{path}' as a table \(BadGzipFile: .*\)\. Replace it with the file as the instrument or the dataset's download wrote it\.$",
    ):
        common.read_table(path)


def test_every_format_name_gives_a_reader_and_an_unknown_one_lists_them_all():
    from spahgc_kedro.readers import READERS, get_reader

    for name in READERS:
        reader = get_reader(name)
        assert callable(reader.discover_sections) and callable(reader.read_section), name
    known = "alex, hest, image_spots, spatialdata, st_legacy, visium, visium_hd, xenium"
    with pytest.raises(ValueError, match=rf"^Unknown data format 'visum'. Known formats: {known}.$"):
        get_reader("visum")


def test_array_coordinates_come_from_the_table_even_when_it_holds_nothing_else():
    obs = pd.DataFrame({"array_row": [5, 7], "array_col": [3, 9]}, index=["a", "b"])
    np.testing.assert_array_equal(common.array_rowcol(obs, np.zeros((2, 2))), [[5, 3], [7, 9]])


def test_array_coordinates_of_a_grid_of_centres_start_at_zero_in_each_axis():
    # centres 100 px apart, x from 1,000 and y from 300: rows follow y, columns follow x
    xy = np.array([[1000.0, 300.0], [1100.0, 300.0], [1000.0, 400.0], [1200.0, 500.0]])
    obs = pd.DataFrame(index=["s1", "s2", "s3", "s4"])
    np.testing.assert_array_equal(common.array_rowcol(obs, xy), [[0, 0], [0, 1], [1, 0], [2, 2]])
