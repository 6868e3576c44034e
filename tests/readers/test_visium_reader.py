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


def test_space_ranger_1_mtx_folder_with_genes_tsv_and_antibody_rows(tmp_path):
    """Space Ranger 1 wrote genes.tsv (id, symbol); 2+ write features.tsv (id, symbol, type) where
    non-gene rows (antibody capture) must not become genes."""
    import scipy.io
    import scipy.sparse as sp

    folder = tmp_path / "filtered_feature_bc_matrix"
    folder.mkdir()
    scipy.io.mmwrite(folder / "matrix.mtx", sp.coo_matrix(COUNTS.T))
    (folder / "genes.tsv").write_text("".join(f"ENSG{i}\t{g}\n" for i, g in enumerate(GENES)))
    (folder / "barcodes.tsv").write_text("".join(f"{b}\n" for b in BARCODES))
    counts, genes, barcodes = visium.read_mtx_folder(folder, "layout")
    assert genes == GENES and barcodes == BARCODES
    np.testing.assert_array_equal(counts.toarray(), COUNTS)

    (folder / "genes.tsv").unlink()
    types = ["Gene Expression", "Antibody Capture", "Gene Expression", "Gene Expression"]
    rows = "".join(f"ENSG{i}\t{g}\t{t}\n" for i, (g, t) in enumerate(zip(GENES, types, strict=True)))
    (folder / "features.tsv").write_text(rows)
    counts, genes, _ = visium.read_mtx_folder(folder, "layout")
    assert genes == [GENES[0], GENES[2], GENES[3]]
    np.testing.assert_array_equal(counts.toarray(), COUNTS[:, [0, 2, 3]])

    (folder / "features.tsv").write_text("".join(f"{g}\n" for g in GENES))  # symbols only, as hand-made files do
    assert visium.read_mtx_folder(folder, "layout")[1] == GENES


def test_mtx_files_that_do_not_belong_together_are_named(tmp_path):
    folder = write_mtx(tmp_path / "m", COUNTS, GENES, BARCODES)
    (folder / "barcodes.tsv").write_text("".join(f"{b}\n" for b in BARCODES[:5]))
    with pytest.raises(InputDataError) as error:
        visium.read_mtx_folder(folder, "layout")
    assert str(error.value) == (
        f"'{folder / 'matrix.mtx'}' is 4 x 6 (genes x spots) but '{folder / 'features.tsv'}' lists 4 genes and "
        f"'{folder / 'barcodes.tsv'}' 5 barcodes: the files do not belong together."
    )
    (folder / "barcodes.tsv").unlink()
    with pytest.raises(InputDataError) as error:
        visium.read_mtx_folder(folder, "the layout")
    assert str(error.value) == (
        f"Missing 10x barcodes.tsv (or barcodes.tsv.gz): '{folder / 'barcodes.tsv'}'. Expected layout: the layout"
    )


def test_spot_table_messages_name_the_file_and_the_columns(tmp_path):
    path = tmp_path / "tissue_positions.csv"
    columns = ", ".join(visium.POSITION_COLUMNS)
    path.write_text("barcode,in_tissue,array_row\nBC00-1,1,0\n")
    with pytest.raises(InputDataError) as error:
        visium.read_tissue_positions(path)
    assert str(error.value) == f"Spot table '{path}' has 3 columns; expected the six Space Ranger columns {columns}."
    path.write_text("BC00-1,1,0,1,ten,20\n")
    with pytest.raises(InputDataError) as error:
        visium.read_tissue_positions(path)
    assert str(error.value) == f"Spot table '{path}' has non-numeric positions; expected {columns}."
    # without a header the first row is a spot (told by its numeric second field); barcodes stay text
    path.write_text("0001,1,0,1,10,20\n0002,0,0,3,10,60\n")
    table = visium.read_tissue_positions(path)
    assert list(table.index) == ["0001"] and table["pxl_col_in_fullres"].tolist() == [20]


def test_scale_factors_without_the_spot_diameter_are_refused(tmp_path):
    (tmp_path / "scalefactors_json.json").write_text(json.dumps({"tissue_hires_scalef": 0.5}))
    with pytest.raises(InputDataError) as error:
        visium.read_scale_factors(tmp_path, "S1", "layout")
    path = tmp_path / "scalefactors_json.json"
    assert str(error.value) == f"'{path}' lacks 'spot_diameter_fullres'; re-export it with Space Ranger."
    path.unlink()
    with pytest.raises(InputDataError) as error:
        visium.read_scale_factors(tmp_path, "S1", "layout")
    assert str(error.value) == f"Missing scale factors of S1: '{path}'. Expected layout: layout"
