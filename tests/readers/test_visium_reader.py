"""Visium Space Ranger outs/ reader on tiny generated sections."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from native_layouts import BARCODES, COUNTS, GENES, spot_table, write_10x_h5, write_image, write_mtx, write_positions

from spahgc_kedro.errors import InputDataError
from spahgc_kedro.readers import visium

SPOT_DIAMETER_FULLRES = 11.0


def make_section(
    raw: Path, name: str = "block1", *, outs: bool = True, h5: bool = True, header: bool = False, image: bool = True
) -> Path:
    """Write one section as Space Ranger leaves it, plus the user's full-resolution image."""
    section = raw / name
    root = section / "outs" if outs else section
    if h5:
        write_10x_h5(root / "filtered_feature_bc_matrix.h5", COUNTS, GENES, BARCODES)
    else:
        write_mtx(root / "filtered_feature_bc_matrix", COUNTS, GENES, BARCODES, gz=True)
    positions = "tissue_positions.csv" if header else "tissue_positions_list.csv"
    write_positions(root / "spatial" / positions, spot_table(), header=header)
    (root / "spatial" / "scalefactors_json.json").write_text(
        json.dumps({"spot_diameter_fullres": SPOT_DIAMETER_FULLRES, "tissue_hires_scalef": 0.5})
    )
    if image:
        write_image(section / "full_res.jpg")
    return section


@pytest.mark.parametrize(("outs", "h5", "header"), [(True, True, False), (False, False, True), (True, False, True)])
def test_reads_section(tmp_path, outs, h5, header):
    make_section(tmp_path, outs=outs, h5=h5, header=header)
    assert visium.discover_sections(tmp_path) == ["block1"]
    adata = visium.read_section(tmp_path, "block1")
    assert list(adata.obs_names) == BARCODES
    assert list(adata.var_names) == GENES
    np.testing.assert_array_equal(adata.X.toarray(), COUNTS)
    np.testing.assert_allclose(adata.obsm["spatial"][:2], [[20.0, 30.0], [45.0, 70.0]])
    assert adata.uns["spot_diameter_px"] == SPOT_DIAMETER_FULLRES
    assert adata.uns["microns_per_pixel"] == pytest.approx(55.0 / SPOT_DIAMETER_FULLRES)
    assert adata.uns["image_size"] == [200, 150]


def test_image_from_listing(tmp_path):
    make_section(tmp_path, image=False)
    image = write_image(tmp_path / "images" / "block1.tif")
    (tmp_path / "images.csv").write_text("section,image\nblock1,images/block1.tif\n")
    adata = visium.read_section(tmp_path, "block1")
    assert adata.uns["image_path"] == str(image.resolve())


def test_missing_image_says_where_to_put_it(tmp_path):
    make_section(tmp_path, image=False)
    with pytest.raises(InputDataError, match=r"Put the image file .* in '.*block1/'.*images\.csv"):
        visium.read_section(tmp_path, "block1")


def test_drops_spots_without_counts(tmp_path, caplog):
    section = make_section(tmp_path)
    table = spot_table()
    table.loc[len(table)] = ["EXTRA-1", 1, 3, 3, 100.0, 100.0]
    write_positions(section / "outs" / "spatial" / "tissue_positions_list.csv", table, header=False)
    with caplog.at_level(logging.WARNING):
        adata = visium.read_section(tmp_path, "block1")
    assert adata.n_obs == 6
    assert "0 spots with counts but no coordinates and 1 with coordinates but no counts" in caplog.text


def test_duplicated_position_barcodes_fail(tmp_path):
    section = make_section(tmp_path, header=True)
    table = spot_table()
    table.loc[len(table)] = table.loc[0]
    write_positions(section / "outs" / "spatial" / "tissue_positions.csv", table, header=True)
    with pytest.raises(InputDataError, match="duplicated barcodes .*tissue_positions.csv"):
        visium.read_section(tmp_path, "block1")


def test_spots_outside_image_fail(tmp_path):
    section = make_section(tmp_path)
    write_image(section / "full_res.jpg", size=(200, 50))
    with pytest.raises(InputDataError, match="outside"):
        visium.read_section(tmp_path, "block1")


@pytest.mark.parametrize("missing", ["spatial/scalefactors_json.json", "spatial/tissue_positions_list.csv"])
def test_missing_file_is_named(tmp_path, missing):
    section = make_section(tmp_path)
    (section / "outs" / missing).unlink()
    with pytest.raises(InputDataError, match=Path(missing).stem):
        visium.read_section(tmp_path, "block1")


def test_missing_matrix_is_named(tmp_path):
    section = make_section(tmp_path)
    (section / "outs" / "filtered_feature_bc_matrix.h5").unlink()
    with pytest.raises(InputDataError, match="filtered_feature_bc_matrix"):
        visium.read_section(tmp_path, "block1")


def _with_scanpy_images(section: Path) -> Path:
    """The hires/lowres PNGs scanpy.read_visium insists on (our reader uses the full-resolution image)."""
    spatial = section / "outs" / "spatial"
    write_image(spatial / "tissue_hires_image.png", (100, 75))
    write_image(spatial / "tissue_lowres_image.png", (20, 15))
    scalefactors = spatial / "scalefactors_json.json"
    factors = json.loads(scalefactors.read_text())
    scalefactors.write_text(json.dumps({**factors, "tissue_lowres_scalef": 0.1, "fiducial_diameter_fullres": 16.0}))
    return section / "outs"


@pytest.mark.parametrize("header", [False, True], ids=["space-ranger-1", "space-ranger-2+"])
def test_agrees_with_scanpy_read_visium(tmp_path, header):
    """An independent reader on the same Space Ranger files: same barcodes, counts and (x, y) pixels.

    Ours reads the matrix.mtx folder with its own code; scanpy reads the HDF5 matrix and the spot table
    with its own parser, so a column swap or a header misread on either side shows.
    """
    import warnings

    import scanpy as sc

    section = make_section(tmp_path, header=header)
    write_mtx(section / "outs" / "filtered_feature_bc_matrix", COUNTS, GENES, BARCODES, gz=True)
    (section / "outs" / "filtered_feature_bc_matrix.h5").rename(section / "outs" / "kept.h5")
    ours = visium.read_section(tmp_path, "block1")
    (section / "outs" / "kept.h5").rename(section / "outs" / "filtered_feature_bc_matrix.h5")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        theirs = sc.read_visium(_with_scanpy_images(section))
    theirs = theirs[theirs.obs["in_tissue"] == 1]
    assert list(ours.obs_names) == list(theirs.obs_names)
    assert list(ours.var_names) == list(theirs.var_names)
    np.testing.assert_array_equal(ours.X.toarray(), theirs.X.toarray())
    np.testing.assert_allclose(ours.obsm["spatial"], np.asarray(theirs.obsm["spatial"], dtype=np.float64))
    np.testing.assert_array_equal(ours.obs["array_row"], theirs.obs["array_row"])
    np.testing.assert_array_equal(ours.obs["array_col"], theirs.obs["array_col"])
