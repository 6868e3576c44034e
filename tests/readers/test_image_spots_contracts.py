"""The image_spots reader's small contracts, each against a hand-made answer: grid steps, tissue tiles, edges."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from spahgc_kedro.errors import InputDataError
from spahgc_kedro.readers import image_spots


def _spot_table(path, x, y):
    """A `spot_id,x,y` table of spots s0, s1, ... at the given full-resolution pixels."""
    ids = [f"s{i}" for i in range(len(x))]
    pd.DataFrame({"spot_id": ids, "x": x, "y": y}).to_csv(path, index=False)
    return path


def test_grid_coordinates_count_steps_of_a_sub_pixel_spacing():
    """Spots half a pixel apart are consecutive grid columns, not rounded onto whole pixels."""
    xy = np.array([[10.0, 20.0], [10.5, 20.0], [11.0, 20.0], [11.5, 20.0], [10.0, 20.5]])
    rowcol = image_spots._grid_coordinates(xy)
    assert rowcol.tolist() == [[0, 0], [0, 1], [0, 2], [0, 3], [1, 0]]


def test_spot_table_with_mostly_repeated_centres_counts_grid_steps_in_pixels(tmp_path):
    """When the median spacing is 0 (most centres repeated), the grid step falls back to one pixel."""
    path = _spot_table(tmp_path / "dup_spots.csv", x=[100.0, 100.0, 110.0], y=[50.0, 50.0, 53.0])
    ids, xy, rowcol = image_spots.read_spot_table(path)
    assert ids == ["s0", "s1", "s2"]
    np.testing.assert_array_equal(xy, [[100.0, 50.0], [100.0, 50.0], [110.0, 53.0]])
    # (row, col) = (y - 50, x - 100) in pixels
    assert rowcol.tolist() == [[0, 0], [0, 0], [3, 10]]


def test_visium_spot_table_drops_spots_whose_in_tissue_is_not_the_number_one(tmp_path):
    """`in_tissue` values that are not numbers (here '?') count as outside the tissue, not as an error."""
    path = tmp_path / "v_spots.csv"
    pd.DataFrame(
        {
            "barcode": ["AAA-1", "CCC-1", "GGG-1", "TTT-1"],
            "in_tissue": ["1", "?", "1", "0"],
            "pxl_row_in_fullres": [30.0, 30.0, 130.0, 130.0],
            "pxl_col_in_fullres": [40.0, 90.0, 140.0, 40.0],
        }
    ).to_csv(path, index=False)
    ids, xy, _ = image_spots.read_spot_table(path)
    assert ids == ["AAA-1", "GGG-1"]
    np.testing.assert_array_equal(xy, [[40.0, 30.0], [140.0, 130.0]])


def test_tile_grid_keeps_tiles_half_covered_by_tissue_by_default(tmp_path):
    """The default minimum tissue fraction is one half: a tile exactly half tissue is kept."""
    pixels = np.full((100, 300, 3), 250, dtype=np.uint8)  # white glass
    pixels[:, :150] = (200, 120, 180)  # H&E pink over x < 150: tile 0 all tissue, tile 1 half, tile 2 none
    image = tmp_path / "half.png"
    Image.fromarray(pixels).save(image)
    ids, xy, rowcol = image_spots.tile_grid(image, 100.0, tissue_only=True)
    assert ids == ["r0_c0", "r0_c1"]
    np.testing.assert_array_equal(xy, [[50.0, 50.0], [150.0, 50.0]])
    assert rowcol.tolist() == [[0, 0], [0, 1]]


def test_tile_fraction_of_a_tile_smaller_than_a_thumbnail_pixel_is_that_pixel():
    """Inside the image, a tile that maps into one thumbnail pixel is scored on that pixel alone."""
    mask = np.zeros((4, 4), dtype=bool)
    mask[1, 1] = True
    # 10 px per thumbnail pixel: a 5 px tile at index 2 spans 10-15 px (thumbnail pixel 1), at index 4 20-25 px (2)
    fraction = image_spots.tile_fraction(mask, np.array([2, 2, 4]), np.array([2, 4, 2]), 5.0, (40, 40))
    np.testing.assert_array_equal(fraction, [1.0, 0.0, 0.0])


def test_tile_fraction_at_the_image_edge_counts_only_the_thumbnail_inside_it():
    """A tile overhanging the far edge is scored on its part inside the image; one starting on the edge, on the
    last thumbnail pixel; never NaN."""
    mask = np.zeros((4, 4), dtype=bool)
    mask[3, :2] = True  # the last thumbnail row is half tissue (columns 0-1)
    mask[:, 3] = True  # the last thumbnail column is tissue
    # 10 px per thumbnail pixel: an 18 px tile at row 2, column 0 spans y 36-54 px (thumbnail rows 3-4, and the
    # image ends after row 3) and x 0-18 px (thumbnail column 0): pixel (3, 0), tissue
    overhang = image_spots.tile_fraction(mask, np.array([2]), np.array([0]), 18.0, (40, 40))
    np.testing.assert_array_equal(overhang, [1.0])
    # on a 20 px wide image (5 px per thumbnail column) x 0-18 px is columns 0-2 of row 3: two of three are tissue
    wide = image_spots.tile_fraction(mask, np.array([2]), np.array([0]), 18.0, (20, 40))
    np.testing.assert_allclose(wide, [2 / 3])
    # a 10 px tile at row 4, column 4 starts on the far edge (40 px): scored on the last thumbnail pixel
    on_edge = image_spots.tile_fraction(mask, np.array([4, 4]), np.array([4, 1]), 10.0, (40, 40))
    np.testing.assert_array_equal(on_edge, [1.0, 1.0])


def test_spot_table_of_pixel_columns_alone_is_refused_with_the_expected_layouts(tmp_path):
    """A table with no spot id column (only the two pixel columns) names the layouts it expects."""
    path = tmp_path / "pixels_only.csv"
    pd.DataFrame({"pxl_row_in_fullres": [30.0, 130.0], "pxl_col_in_fullres": [40.0, 140.0]}).to_csv(path, index=False)
    with pytest.raises(InputDataError, match=r"pixels_only\.csv.*expected spot_id,x,y or Visium's barcode"):
        image_spots.read_spot_table(path)


def test_tile_grid_keeps_a_tile_that_fits_exactly_at_a_fractional_spacing(tmp_path):
    """Five 100.2 px tiles fit a 501 px wide image exactly: the grid has five columns, not four."""
    image = tmp_path / "tissue.png"
    Image.fromarray(np.full((120, 501, 3), (200, 120, 180), dtype=np.uint8)).save(image)
    ids, _, rowcol = image_spots.tile_grid(image, 100.2, tissue_only=False)
    assert ids == [f"r0_c{c}" for c in range(5)]
    assert rowcol[:, 1].tolist() == [0, 1, 2, 3, 4]


def test_visium_spot_table_takes_its_barcode_column_wherever_it_stands(tmp_path):
    """Pixel columns first and the barcode last: the barcodes are the spot ids, not a layout error."""
    path = tmp_path / "S_spots.csv"
    pd.DataFrame(
        {
            "pxl_row_in_fullres": [10.0, 10.0, 30.0],
            "pxl_col_in_fullres": [5.0, 25.0, 5.0],
            "barcode": ["A-1", "B-1", "C-1"],
        }
    ).to_csv(path, index=False)
    spot_ids, xy, _ = image_spots.read_spot_table(path)
    assert spot_ids == ["A-1", "B-1", "C-1"]
    np.testing.assert_array_equal(xy, [[5.0, 10.0], [25.0, 10.0], [5.0, 30.0]])
