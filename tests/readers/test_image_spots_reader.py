"""The image_spots reader: new sections from an image plus a spot table, or a tissue tile grid."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from spahgc_kedro.errors import InputDataError
from spahgc_kedro.readers import get_reader, image_spots


def _half_tissue_image(path, width=400, height=300):
    """Left half H&E pink, right half white glass."""
    pixels = np.full((height, width, 3), 250, dtype=np.uint8)
    pixels[:, : width // 2] = (200, 120, 180)
    Image.fromarray(pixels).save(path)
    return path


def test_registry_knows_the_reader():
    assert get_reader("image_spots") is image_spots


def test_spot_csv_keeps_order_ids_and_coordinates(tmp_path):
    _half_tissue_image(tmp_path / "new1.png")
    table = pd.DataFrame({"spot_id": ["s3", "s1", "s2"], "x": [10.5, 110.0, 210.0], "y": [20.0, 20.0, 120.0]})
    table.to_csv(tmp_path / "new1_spots.csv", index=False)
    assert image_spots.discover_sections(tmp_path) == ["new1"]
    adata = image_spots.read_section(tmp_path, "new1")
    assert adata.shape == (3, 0)
    assert list(adata.obs_names) == ["s3", "s1", "s2"]
    np.testing.assert_allclose(adata.obsm["spatial"], table[["x", "y"]].to_numpy())
    assert adata.uns["image_size"] == [400, 300] and adata.uns["platform"] == "image_only"
    assert adata.uns["spot_spacing_px"] == pytest.approx(99.5)
    assert adata.obs["array_col"].tolist() == [0, 1, 2] and adata.obs["array_row"].tolist() == [0, 0, 1]


def test_visium_style_csv_uses_fullres_pixels_and_in_tissue(tmp_path):
    _half_tissue_image(tmp_path / "v.jpg")
    pd.DataFrame(
        {
            "barcode": ["AAA-1", "CCC-1", "GGG-1"],
            "in_tissue": [1, 0, 1],
            "array_row": [0, 0, 2],
            "array_col": [0, 2, 4],
            "pxl_row_in_fullres": [30.0, 30.0, 130.0],
            "pxl_col_in_fullres": [40.0, 90.0, 140.0],
        }
    ).to_csv(tmp_path / "v_spots.csv", index=False)
    adata = image_spots.read_section(tmp_path, "v")
    assert list(adata.obs_names) == ["AAA-1", "GGG-1"]
    np.testing.assert_allclose(adata.obsm["spatial"], [[40.0, 30.0], [140.0, 130.0]])
    assert adata.obs["array_col"].tolist() == [0, 4]


def test_tile_grid_keeps_only_tissue_tiles(tmp_path):
    _half_tissue_image(tmp_path / "grid.png")
    every = image_spots.read_section(tmp_path, "grid", grid_spacing_px=50, tissue_only=False)
    assert every.n_obs == 8 * 6
    tissue = image_spots.read_section(tmp_path, "grid", grid_spacing_px=50, tissue_only=True)
    assert tissue.n_obs == 4 * 6
    assert (tissue.obsm["spatial"][:, 0] < 200).all()
    assert tissue.obs_names[0] == "r0_c0" and tissue.uns["spot_spacing_px"] == pytest.approx(50.0)
    np.testing.assert_allclose(tissue.obsm["spatial"][0], [25.0, 25.0])


def test_missing_image_names_the_section_and_layout(tmp_path):
    pd.DataFrame({"spot_id": ["a"], "x": [1.0], "y": [1.0]}).to_csv(tmp_path / "lost_spots.csv", index=False)
    assert image_spots.discover_sections(tmp_path) == ["lost"]
    with pytest.raises(InputDataError, match=r"Missing the H&E image of new section 'lost'.*lost\.tif"):
        image_spots.read_section(tmp_path, "lost")


def test_bad_tables_and_empty_folders_fail_clearly(tmp_path):
    with pytest.raises(InputDataError, match="No new sections found"):
        image_spots.discover_sections(tmp_path)
    _half_tissue_image(tmp_path / "s.png")
    pd.DataFrame({"id": ["a"], "col": [1.0]}).to_csv(tmp_path / "s_spots.csv", index=False)
    with pytest.raises(InputDataError, match="expected spot_id,x,y"):
        image_spots.read_section(tmp_path, "s")
    pd.DataFrame({"spot_id": ["a"], "x": [1000.0], "y": [1.0]}).to_csv(tmp_path / "s_spots.csv", index=False)
    with pytest.raises(InputDataError, match="outside"):
        image_spots.read_section(tmp_path, "s")


def test_space_rangers_own_spot_tables_are_read_as_they_are(tmp_path):
    _half_tissue_image(tmp_path / "sr.png")
    # Space Ranger 1's tissue_positions_list.csv: no header; barcode, in_tissue, row, col, pxl_row, pxl_col
    (tmp_path / "sr_spots.csv").write_text("0001-1,1,0,0,30,40\n0002-1,0,0,2,30,90\n0003-1,1,2,4,130,140\n")
    adata = image_spots.read_section(tmp_path, "sr")
    assert list(adata.obs_names) == ["0001-1", "0003-1"]
    np.testing.assert_allclose(adata.obsm["spatial"], [[40.0, 30.0], [140.0, 130.0]])
    assert adata.obs["array_col"].tolist() == [0, 4]
    # with a header but another name for the id column: the first column, kept as text
    pd.DataFrame(
        {"spot": ["0007", "0008"], "pxl_row_in_fullres": [30.0, 130.0], "pxl_col_in_fullres": [40.0, 140.0]}
    ).to_csv(tmp_path / "sr_spots.csv", index=False)
    adata = image_spots.read_section(tmp_path, "sr")
    assert list(adata.obs_names) == ["0007", "0008"]
    np.testing.assert_allclose(adata.obsm["spatial"], [[40.0, 30.0], [140.0, 130.0]])


def test_spot_table_messages_name_the_file_and_the_columns(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"id": ["a"], "col": [1.0]}).to_csv(path, index=False)
    with pytest.raises(InputDataError) as error:
        image_spots.read_spot_table(path)
    assert str(error.value) == (
        f"Spot table '{path}' has columns ['id', 'col']; expected spot_id,x,y or Visium's "
        "barcode,...,pxl_row_in_fullres,pxl_col_in_fullres (full-resolution pixels)."
    )
    pd.DataFrame({"spot_id": ["a", "a"], "x": [1.0, 2.0], "y": [1.0, 2.0]}).to_csv(path, index=False)
    with pytest.raises(InputDataError, match=rf"^1 duplicated spot ids in '{path}'"):
        image_spots.read_spot_table(path)
    pd.DataFrame({"spot_id": ["a"], "x": ["left"], "y": [1.0]}).to_csv(path, index=False)
    with pytest.raises(InputDataError) as error:
        image_spots.read_spot_table(path)
    assert str(error.value) == f"Spot table '{path}' has no spots or non-numeric coordinates in ['x', 'y']."
