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


def test_tile_fraction_equals_each_tiles_share_of_tissue_counted_pixel_by_pixel():
    """The summed-area table against a direct count over each tile's thumbnail window, on a random mask whose
    thumbnail scale differs along x and y and whose last tiles end before the image does."""
    rng = np.random.default_rng(0)
    mask = rng.random((37, 53)) < 0.4
    size, spacing = (530 + 7, 370 + 5), 31.0  # full-resolution width, height
    rows, cols = (a.ravel() for a in np.meshgrid(np.arange(370 // 31), np.arange(530 // 31), indexing="ij"))
    expected = []
    for row, col in zip(rows, cols, strict=True):
        y0 = min(int(np.floor(row * spacing * 37 / size[1])), 36)
        y1 = min(max(int(np.floor((row + 1) * spacing * 37 / size[1])), y0 + 1), 37)
        x0 = min(int(np.floor(col * spacing * 53 / size[0])), 52)
        x1 = min(max(int(np.floor((col + 1) * spacing * 53 / size[0])), x0 + 1), 53)
        expected.append(mask[y0:y1, x0:x1].mean())
    np.testing.assert_allclose(image_spots.tile_fraction(mask, rows, cols, spacing, size), expected)
    # a tile smaller than one thumbnail pixel still covers that pixel
    one = np.zeros((4, 4), dtype=bool)
    one[3, 3] = True
    np.testing.assert_allclose(image_spots.tile_fraction(one, np.array([3]), np.array([3]), 10.0, (40, 40)), [1.0])
    np.testing.assert_allclose(image_spots.tile_fraction(one, np.array([30]), np.array([30]), 1.0, (40, 40)), [1.0])


def test_tissue_mask_thresholds_are_inclusive_and_read_saturation_and_brightness():
    """HSV as PIL computes it (0-255): S >= 0.08 x 255 and V <= 0.92 x 255 are tissue, on the boundary too."""
    from PIL import Image

    pixels = np.array(
        [
            [(200, 120, 180), (250, 250, 250), (20, 20, 20)],  # stained; white glass; dark but grey (S = 0)
            [(234, 216, 216), (235, 235, 200), (234, 214, 214)],  # S just under; V just over; S just over, V inside
        ],
        dtype=np.uint8,
    )
    hsv = np.asarray(Image.fromarray(pixels).convert("HSV"), dtype=np.float64) / 255.0
    expected = (hsv[..., 1] >= 0.08) & (hsv[..., 2] <= 0.92)
    np.testing.assert_array_equal(image_spots.tissue_mask(pixels), expected)
    assert expected.tolist() == [[True, False, False], [False, False, True]]
    # exactly on both thresholds: S = 0.08 and V = 0.92 after PIL's rounding to 0-255
    edge = np.array([[(235, 216, 216)]], dtype=np.uint8)
    s, v = np.asarray(Image.fromarray(edge).convert("HSV"), dtype=np.float32)[0, 0, 1:] / 255.0
    assert image_spots.tissue_mask(edge)[0, 0] == bool(
        s >= image_spots.MIN_SATURATION and v <= image_spots.MAX_BRIGHTNESS
    )


def test_tile_grid_ids_run_row_by_row_and_keep_tiles_at_exactly_the_minimum(tmp_path):
    image = _half_tissue_image(tmp_path / "g.png", width=300, height=100)
    ids, xy, rowcol = image_spots.tile_grid(image, 50.0, tissue_only=False)
    assert ids[:7] == ["r0_c0", "r0_c1", "r0_c2", "r0_c3", "r0_c4", "r0_c5", "r1_c0"]
    np.testing.assert_allclose(xy[6], [25.0, 75.0])
    assert rowcol[6].tolist() == [1, 0]
    # every kept tile is wholly tissue: a minimum of exactly 1.0 keeps them all
    ids, _, _ = image_spots.tile_grid(image, 50.0, tissue_only=True, min_tissue_fraction=1.0)
    assert ids == ["r0_c0", "r0_c1", "r0_c2", "r1_c0", "r1_c1", "r1_c2"]
    # tiles of one pixel are allowed
    assert len(image_spots.tile_grid(image, 1.0, tissue_only=False)[0]) == 300 * 100


def test_tile_grid_messages(tmp_path):
    image = _half_tissue_image(tmp_path / "g.png", width=300, height=100)
    for spacing in (0, -5.0):
        with pytest.raises(InputDataError) as error:
            image_spots.tile_grid(image, spacing, tissue_only=False)
        assert str(error.value) == f"predict.grid_spacing_px must be a positive number of pixels, got {spacing!r}."
    # wide enough for tiles across but not down
    with pytest.raises(InputDataError) as error:
        image_spots.tile_grid(image, 150.0, tissue_only=False)
    assert str(error.value) == (
        f"Image '{image}' (300 x 100 px) is smaller than one 150.0 px tile: lower predict.grid_spacing_px."
    )
    glass = tmp_path / "glass.png"
    Image.fromarray(np.full((100, 100, 3), 250, dtype=np.uint8)).save(glass)
    with pytest.raises(InputDataError) as error:
        image_spots.tile_grid(glass, 50.0, tissue_only=True, min_tissue_fraction=0.25)
    assert str(error.value) == (
        f"No tile of '{glass}' is at least 0.25 tissue (HSV saturation >= 0.08, brightness <= 0.92): check the "
        "image, or set predict.tissue_only:false or a lower predict.min_tissue_fraction."
    )


def test_read_section_defaults_options_and_spot_source(tmp_path):
    _half_tissue_image(tmp_path / "d.png", width=448 * 2, height=448)
    default = image_spots.read_section(tmp_path, "d")
    # defaults: 224 px tiles, tissue only (the left half), at least half tissue, scale unknown
    assert default.n_obs == 2 * 2 and default.uns["spot_source"] == "tile grid, 224 px"
    assert np.isnan(default.uns["microns_per_pixel"]) and default.uns["section_id"] == "d"
    scaled = image_spots.read_section(tmp_path, "d", grid_spacing_px=112, microns_per_pixel=0.5)
    assert scaled.n_obs == 4 * 4 and scaled.uns["microns_per_pixel"] == 0.5
    # a tile straddling the tissue edge (a third tissue) is kept only when the minimum allows it
    straddle = dict(grid_spacing_px=300, tissue_only=True)
    assert image_spots.read_section(tmp_path, "d", **straddle, min_tissue_fraction=0.3).n_obs == 2
    assert image_spots.read_section(tmp_path, "d", **straddle, min_tissue_fraction=0.5).n_obs == 1
    pd.DataFrame({"spot_id": ["a"], "x": [10.0], "y": [10.0]}).to_csv(tmp_path / "d_spots.csv", index=False)
    assert image_spots.read_section(tmp_path, "d").uns["spot_source"] == "d_spots.csv"


def test_section_image_is_the_one_image_named_after_the_section(tmp_path):
    _half_tissue_image(tmp_path / "a.png")
    _half_tissue_image(tmp_path / "b.jpg")
    assert image_spots.section_image(tmp_path, "a") == tmp_path / "a.png"
    _half_tissue_image(tmp_path / "a.tif")
    with pytest.raises(InputDataError) as error:
        image_spots.section_image(tmp_path, "a")
    assert str(error.value) == (
        f"Several images of new section 'a' in '{tmp_path}' (a.png, a.tif): keep only the full-resolution H&E."
    )
    with pytest.raises(InputDataError, match=r"none of c\.tif, c\.tiff, c\.btf, .*c\.png is in"):
        image_spots.section_image(tmp_path, "c")


def test_discovery_joins_images_and_spot_tables_and_names_a_missing_folder(tmp_path):
    _half_tissue_image(tmp_path / "img_only.png")
    pd.DataFrame({"spot_id": ["a"], "x": [1.0], "y": [1.0]}).to_csv(tmp_path / "table_only_spots.csv", index=False)
    assert image_spots.discover_sections(tmp_path) == ["img_only", "table_only"]
    with pytest.raises(InputDataError, match=r"No new sections found in '.*absent'"):
        image_spots.discover_sections(tmp_path / "absent")


def test_grid_coordinates_of_a_spot_table_without_them(tmp_path):
    _half_tissue_image(tmp_path / "n.png")
    table = pd.DataFrame(
        {"spot_id": ["p", "q", "r", "s"], "x": [130.0, 180.0, 230.0, 130.0], "y": [70.0] * 3 + [120.0]}
    )
    table.to_csv(tmp_path / "n_spots.csv", index=False)
    adata = image_spots.read_section(tmp_path, "n")
    # spacing 50 px, counted from the smallest x and y
    assert adata.obs["array_col"].tolist() == [0, 1, 2, 0] and adata.obs["array_row"].tolist() == [0, 0, 0, 1]
    assert adata.obs["array_row"].dtype == np.int64
    single = pd.DataFrame({"spot_id": ["only"], "x": [130.0], "y": [70.0]})
    single.to_csv(tmp_path / "n_spots.csv", index=False)
    assert image_spots.read_section(tmp_path, "n").obs["array_col"].tolist() == [0]


def test_visium_table_with_barcodes_not_first_and_in_tissue_blanks(tmp_path):
    _half_tissue_image(tmp_path / "w.png")
    pd.DataFrame(
        {
            "in_tissue": ["1", "", "1"],
            "barcode": ["AAA-1", "CCC-1", "GGG-1"],
            "pxl_row_in_fullres": [30.0, 30.0, 130.0],
            "pxl_col_in_fullres": [40.0, 90.0, 140.0],
        }
    ).to_csv(tmp_path / "w_spots.csv", index=False)
    adata = image_spots.read_section(tmp_path, "w")
    assert list(adata.obs_names) == ["AAA-1", "GGG-1"]
