"""Patch geometry, border padding, lazy TIFF reads and bad-image errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from spahgc_kedro.errors import InputDataError
from spahgc_kedro.images import TiffImage, open_image
from spahgc_kedro.patches import SpotPatches, patch_size_px, read_patch
from tests.helpers.images import coordinate_image, write_tiled_tiff

WIDTH, HEIGHT = 600, 450


@pytest.fixture
def pixels():
    return coordinate_image(WIDTH, HEIGHT)


@pytest.fixture
def png(tmp_path, pixels):
    path = tmp_path / "section.png"
    Image.fromarray(pixels).save(path)
    return path


def test_patch_is_centred_on_the_spot(png, pixels):
    patches = SpotPatches(png, np.array([[300.7, 200.2]]), patch_px=224, output_px=224)
    patch = patches[0]
    assert patch.shape == (224, 224, 3) and patch.dtype == np.uint8
    # the spot centre pixel (floor x, floor y) sits at index (112, 112)
    assert tuple(patch[112, 112]) == tuple(pixels[200, 300])
    np.testing.assert_array_equal(patch, pixels[200 - 112 : 200 + 112, 300 - 112 : 300 + 112])


def test_border_spot_is_padded_not_shifted(png, pixels):
    patches = SpotPatches(png, np.array([[10.0, HEIGHT - 5.0]]), patch_px=224, output_px=224, pad_value=255)
    patch = patches[0]
    assert tuple(patch[112, 112]) == tuple(pixels[HEIGHT - 5, 10])
    # columns left of x = 0 and rows below the last image row are the fill value
    assert (patch[:, : 112 - 10] == 255).all()
    assert (patch[112 + 5 :, :] == 255).all()
    np.testing.assert_array_equal(patch[: 112 + 5, 112 - 10 :], pixels[HEIGHT - 5 - 112 :, : 224 - 102])


def test_patches_resize_to_the_encoder_input(png):
    patches = SpotPatches(png, np.array([[300.0, 200.0]]), patch_px=100, output_px=224)
    assert patches[0].shape == (224, 224, 3)


def test_patch_size_in_microns():
    assert patch_size_px({"microns_per_pixel": 0.5}, {"patch_size_px": 224, "patch_size_um": 112}) == 224
    assert patch_size_px({"microns_per_pixel": 0.25}, {"patch_size_px": 224, "patch_size_um": 112}) == 448
    assert patch_size_px({}, {"patch_size_px": 200, "patch_size_um": None}) == 200
    with pytest.raises(InputDataError, match="section S9.*microns_per_pixel|S9.*patch_size_um"):
        patch_size_px({"section_id": "S9", "microns_per_pixel": float("nan")}, {"patch_size_um": 112})


def test_lazy_tiff_regions_equal_a_whole_read(tmp_path, pixels):
    path = write_tiled_tiff(tmp_path / "wsi.tif", pixels)
    image = open_image(path)
    assert isinstance(image, TiffImage) and image.size == (WIDTH, HEIGHT)
    for centre in [(300.5, 200.5), (3.0, 3.0), (WIDTH - 1.0, HEIGHT - 1.0), (100.0, 440.0)]:
        window = read_patch(image, centre, 224, 0)
        padded = np.pad(pixels, ((224, 224), (224, 224), (0, 0)))
        x0, y0 = int(centre[0]) - 112 + 224, int(centre[1]) - 112 + 224
        np.testing.assert_array_equal(window, padded[y0 : y0 + 224, x0 : x0 + 224])
    image.close()


def test_tiff_patches_survive_worker_pickling(tmp_path, pixels):
    import pickle

    patches = SpotPatches(
        write_tiled_tiff(tmp_path / "wsi.tif", pixels), np.array([[50.0, 60.0]]), patch_px=32, output_px=32
    )
    first = patches[0]
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(patches))[0], first)


def test_image_smaller_than_the_coordinates_is_named(png):
    with pytest.raises(InputDataError, match=r"Section B7: 1 of 2 spot centres.*section\.png.*full-resolution"):
        SpotPatches(png, np.array([[10.0, 10.0], [WIDTH * 2.0, 10.0]]), patch_px=224, output_px=224, section_id="B7")


def test_truncated_jpeg_is_named(tmp_path, pixels):
    path = tmp_path / "cut.jpg"
    Image.fromarray(pixels).save(path, quality=90)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputDataError, match=r"cut\.jpg.*re-download"):
        open_image(path)


def test_truncated_tiff_is_named(tmp_path, pixels):
    path = write_tiled_tiff(tmp_path / "cut.tif", pixels)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(InputDataError, match=r"cut\.tif"):
        image = open_image(path)
        read_patch(image, (300.0, 200.0), 224, 0)


def test_missing_image_is_named(tmp_path):
    with pytest.raises(InputDataError, match=r"nowhere\.jpg.*ingestion"):
        open_image(tmp_path / "nowhere.jpg")
