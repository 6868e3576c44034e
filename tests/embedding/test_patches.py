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


def write_ome_zarr(path, pixels, zarr_format: int):
    """An OME-Zarr multiscale image written with zarr alone (NGFF 0.4 in zarr v2, 0.5 in v3): levels 0 and 1, c/y/x."""
    import zarr

    root = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    cyx = np.moveaxis(pixels, -1, 0)
    root.create_array("s0", data=cyx, chunks=(3, 64, 64))
    root.create_array("s1", data=np.ascontiguousarray(cyx[:, ::2, ::2]), chunks=(3, 64, 64))
    axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    entry = {"axes": axes, "datasets": [{"path": "s0"}, {"path": "s1"}]}
    if zarr_format == 2:
        root.attrs["multiscales"] = [{**entry, "version": "0.4"}]
    else:
        root.attrs["ome"] = {"version": "0.5", "multiscales": [entry]}
    return path


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_ome_zarr_regions_thumbnail_and_pickling(tmp_path, pixels, zarr_format):
    import pickle

    from spahgc_kedro.images import ZarrImage, image_size, read_thumbnail

    path = write_ome_zarr(tmp_path / "he", pixels, zarr_format)
    image = open_image(path)
    assert isinstance(image, ZarrImage) and image.size == image_size(path) == (WIDTH, HEIGHT)
    np.testing.assert_array_equal(image.read(100, 50, 164, 114), pixels[50:114, 100:164])
    thumbnail, full_size = read_thumbnail(path, max_side=150)
    assert full_size == (WIDTH, HEIGHT) and thumbnail.shape == (113, 150, 3)
    # read from level 1 (300 px wide, the smallest at least 150), then resized: the colours of the whole image
    np.testing.assert_allclose(thumbnail.mean(axis=(0, 1)), pixels[::4, ::4].mean(axis=(0, 1)), atol=3)
    patches = SpotPatches(path, np.array([[50.0, 60.0]]), patch_px=32, output_px=32)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(patches))[0], pixels[44:76, 34:66])


def test_a_folder_that_is_not_an_ome_zarr_image_is_named(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    with pytest.raises(InputDataError, match=r"'.*plain' is not an OME-Zarr image .*images/<name> folder"):
        open_image(folder)


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


def test_views_are_the_eight_flips_and_rotations_of_the_patch(png, pixels):
    centre = np.array([[300.0, 200.0]])
    plain = pixels[200 - 32 : 200 + 32, 300 - 32 : 300 + 32]
    seen = []
    for view in range(8):
        patch = SpotPatches(png, centre, patch_px=64, output_px=64, view=view)[0]
        expected = np.rot90(plain, view % 4)
        np.testing.assert_array_equal(patch, expected[:, ::-1] if view >= 4 else expected)
        seen.append(patch.tobytes())
    assert len(set(seen)) == 8  # a locatable image has no symmetry: eight different patches
    with pytest.raises(ValueError, match="view"):
        SpotPatches(png, centre, patch_px=64, output_px=64, view=8)


def test_context_and_views_settings_embed_what_they_say(png, monkeypatch):
    from spahgc_kedro import encoders
    from spahgc_kedro.embedding import LazyEncoder, embed_section, patch_settings
    from tests.helpers.fake_encoder import patch_statistics_encoder
    from tests.helpers.images import image_section

    monkeypatch.setattr(encoders, "build_encoder", lambda name, **kw: patch_statistics_encoder(name, 32))
    section = image_section(png, np.array([[300.0, 200.0], [150.0, 120.0]]))
    base = {"encoder": "efficientnet_lite0", "device": "cpu", "patch_size_px": 32, "pad_value": 255}
    base |= {"batch_size": 8, "num_workers": 0}

    def embed(**settings):
        params = {**base, **settings}
        return embed_section(section, "key", patch_settings(section.uns, params), LazyEncoder(params), params)

    def direct(patch_px, view=0):
        patches = SpotPatches(png, section.obsm["spatial"], patch_px=patch_px, output_px=32, view=view)
        return encoders.encode_patches(
            patch_statistics_encoder("x", 32), patches, encoders.select_device("cpu"), num_workers=0
        )

    plain = embed()
    assert plain.X.shape == (2, 8) and "context_scale" not in plain.uns["encoder"]
    np.testing.assert_allclose(plain.X, direct(32), rtol=1e-6)
    # [spot || 3x context resized to the input]
    context = embed(context_scale=3)
    assert context.X.shape == (2, 16) and context.uns["encoder"]["dim"] == 16
    np.testing.assert_allclose(context.X[:, :8], direct(32), rtol=1e-6)
    np.testing.assert_allclose(context.X[:, 8:], direct(96), rtol=1e-6)
    # the mean over the 8 views
    views = embed(views=8)
    np.testing.assert_allclose(views.X, np.mean([direct(32, v) for v in range(8)], axis=0), rtol=1e-5)
    assert patch_settings(section.uns, {**base, "context_scale": 3, "views": 8})["views"] == 8
    with pytest.raises(ValueError, match="context_scale"):
        patch_settings(section.uns, {**base, "context_scale": 0.5})
