"""Alex (Swarbrick TNBC) reader on tiny generated sample folders."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from native_layouts import BARCODES, COUNTS, GENES, spot_table, write_image, write_mtx, write_positions

from spahgc_kedro.errors import InputDataError
from spahgc_kedro.readers import alex, get_reader


def make_sample(raw: Path, name: str = "CID4465", gz: bool = False, barcodes: list[str] = BARCODES) -> Path:
    """Write one sample in the Alex layout."""
    sample = raw / name
    write_mtx(sample / "filtered_count_matrix", COUNTS, GENES, barcodes, gz=gz)
    write_positions(sample / "spatial" / "tissue_positions_list.csv", spot_table(), header=False)
    (sample / "metadata.csv").write_text("barcode,label\nBC00-1,tumour\n")
    write_image(sample / "image.tif")
    return sample


def test_reads_sample(tmp_path):
    make_sample(tmp_path, gz=True)
    assert get_reader("alex").discover_sections(tmp_path) == ["CID4465"]
    adata = alex.read_section(tmp_path, "CID4465")
    assert list(adata.obs_names) == BARCODES  # the off-tissue spot is gone
    assert list(adata.var_names) == GENES
    np.testing.assert_array_equal(adata.X.toarray(), COUNTS)
    # pxl_col is x, pxl_row is y
    np.testing.assert_allclose(adata.obsm["spatial"][1], [45.0, 70.0])
    assert adata.obs["array_row"].tolist()[:2] == [0, 1]
    assert adata.uns["platform"] == "visium"
    assert adata.uns["image_size"] == [200, 150]
    # no scale factors: 100 um between neighbouring spot centres
    assert adata.uns["microns_per_pixel"] == pytest.approx(100.0 / adata.uns["spot_spacing_px"])


def test_drops_spots_missing_from_a_table(tmp_path, caplog):
    sample = make_sample(tmp_path)
    table = spot_table()
    write_positions(sample / "spatial" / "tissue_positions_list.csv", table.drop(index=[0, 1]), header=False)
    with caplog.at_level(logging.WARNING):
        adata = alex.read_section(tmp_path, "CID4465")
    assert adata.n_obs == 4
    assert "dropped 2 spots with counts but no coordinates and 0" in caplog.text


def test_duplicated_barcodes_fail(tmp_path):
    make_sample(tmp_path, barcodes=BARCODES[:5] + BARCODES[:1])
    with pytest.raises(InputDataError, match="duplicated barcodes"):
        alex.read_section(tmp_path, "CID4465")


def test_spots_outside_image_fail(tmp_path):
    sample = make_sample(tmp_path)
    write_image(sample / "image.tif", size=(100, 150))
    with pytest.raises(InputDataError, match="outside the 100 x 150 px image"):
        alex.read_section(tmp_path, "CID4465")


@pytest.mark.parametrize(
    "missing", ["image.tif", "spatial/tissue_positions_list.csv", "filtered_count_matrix/barcodes.tsv"]
)
def test_missing_file_is_named(tmp_path, missing):
    sample = make_sample(tmp_path)
    (sample / missing).unlink()
    with pytest.raises(InputDataError, match=Path(missing).name):
        alex.read_section(tmp_path, "CID4465")


@pytest.mark.parametrize(
    ("missing", "what"),
    [
        ("", "folder of sample CID4465"),
        ("filtered_count_matrix", "count matrix folder of CID4465"),
        ("spatial/tissue_positions_list.csv", "spot table of CID4465"),
        ("image.tif", "full-resolution image of CID4465"),
    ],
)
def test_a_missing_file_is_named_with_what_it_is_and_the_layout(tmp_path, missing, what):
    import shutil

    sample = make_sample(tmp_path)
    path = sample / missing if missing else sample
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    with pytest.raises(InputDataError) as error:
        alex.read_section(tmp_path, "CID4465")
    assert str(error.value) == f"Missing {what}: '{path}'. Expected layout: {alex.ALEX_LAYOUT}"


def test_an_empty_folder_says_which_layout_it_expects(tmp_path):
    with pytest.raises(InputDataError) as error:
        alex.discover_sections(tmp_path)
    assert str(error.value) == f"No Alex samples found in '{tmp_path}'. Expected layout: {alex.ALEX_LAYOUT}"


def test_space_ranger_scale_factors_set_the_spot_diameter_and_scale(tmp_path):
    import json

    sample = make_sample(tmp_path)
    (sample / "spatial" / "scalefactors_json.json").write_text(json.dumps({"spot_diameter_fullres": 27.5}))
    adata = alex.read_section(tmp_path, "CID4465")
    assert adata.uns["spot_diameter_px"] == 27.5
    assert adata.uns["microns_per_pixel"] == pytest.approx(55.0 / 27.5)  # a Visium spot is 55 um wide
    assert adata.uns["section_id"] == "CID4465"
    assert adata.uns["image_path"] == str((sample / "image.tif").resolve())


def test_duplicated_barcodes_name_the_matrix_folder(tmp_path):
    sample = make_sample(tmp_path, barcodes=BARCODES[:5] + BARCODES[:1])
    with pytest.raises(InputDataError, match=f"duplicated barcodes in '{sample / 'filtered_count_matrix'}'"):
        alex.read_section(tmp_path, "CID4465")
