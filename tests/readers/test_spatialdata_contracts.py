"""The SpatialData reader's small contracts, each against a hand-made answer: which image and coordinate system are
taken, the spot diameter from float32 radii, and the messages that name the store and the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spahgc_kedro.errors import InputDataError
from spahgc_kedro.readers import spatialdata_store

pytest.importorskip("spatialdata", reason='SpatialData interop is the optional extra: pip install -e ".[spatialdata]"')

# four circle centres (x, y) in the shapes' own frame, and their ids in table order
SPOTS = np.array([[10.0, 5.0], [30.0, 15.0], [50.0, 25.0], [70.0, 35.0]])
IDS = ["s0", "s1", "s2", "s3"]
FIX = (
    "Register them to one with spatialdata.transformations.set_transformation, or name a shared one with "
    "--params datasets.<name>.reader_options.coordinate_system:<name>."
)


def scale(factor: float):
    """A spatialdata Scale of `factor` on both axes."""
    from spatialdata.transformations import Scale

    return Scale([factor, factor], axes=("y", "x"))


def identity():
    """A spatialdata Identity."""
    from spatialdata.transformations import Identity

    return Identity()


def image(height: int, width: int, transformations: dict):
    """A single-scale zero (c, y, x) image registered with `transformations`."""
    from spatialdata.models import Image2DModel

    return Image2DModel.parse(
        np.zeros((3, height, width), np.uint8), dims=("c", "y", "x"), transformations=transformations
    )


def write_store(
    path: Path,
    images: dict | None = None,
    spot_systems: dict | None = None,
    radius: np.ndarray | None = None,
    with_table: bool = True,
) -> Path:
    """A store of SPOTS as circles (radius 5 unless given) registered with `spot_systems` (global identity unless
    given), a table of ones annotating them, and `images` (one 100 x 100 'he' at global identity unless given)."""
    import anndata as ad
    import spatialdata as sd
    from spatialdata.models import ShapesModel, TableModel

    shapes = ShapesModel.parse(
        SPOTS,
        geometry=0,
        radius=np.full(len(SPOTS), 5.0) if radius is None else radius,
        index=pd.Index(IDS),
        transformations=spot_systems or {"global": identity()},
    )
    obs = pd.DataFrame({"region": pd.Categorical(["spots"] * len(IDS)), "spot": IDS}, index=IDS)
    table = TableModel.parse(
        ad.AnnData(X=np.ones((len(IDS), 2), np.float32), obs=obs, var=pd.DataFrame(index=["G1", "G2"])),
        region="spots",
        region_key="region",
        instance_key="spot",
    )
    sd.SpatialData(
        images={"he": image(100, 100, {"global": identity()})} if images is None else images,
        shapes={"spots": shapes},
        tables={"table": table} if with_table else {},
    ).write(path)
    return path


def test_an_unreadable_store_message_names_the_error_and_the_fix(tmp_path, monkeypatch):
    """spatialdata's own error, by type and text, then how to write a readable store."""
    import spatialdata

    store = tmp_path / "S1.zarr"
    store.mkdir()

    def fail(path):
        raise ValueError("no zarr.json at the top")

    monkeypatch.setattr(spatialdata, "read_zarr", fail)
    with pytest.raises(InputDataError) as caught:
        spatialdata_store.read_section(tmp_path, "S1")
    assert str(caught.value) == (
        f"Cannot read '{store}' as a SpatialData store (ValueError: no zarr.json at the top). Write it with "
        "spatialdata's SpatialData.write, or check it is the store's top folder."
    )


def test_a_store_without_tables_says_it_has_none(tmp_path):
    """No table at all: both the unnamed and the named choice say the store has none."""
    store = write_store(tmp_path / "S1.zarr", with_table=False)
    with pytest.raises(InputDataError) as caught:
        spatialdata_store.read_section(tmp_path, "S1")
    assert str(caught.value) == (
        f"'{store}' has 0 tables (none); name the one to read with --params datasets.<name>.reader_options.table:<name>."
    )
    with pytest.raises(InputDataError) as caught:
        spatialdata_store.read_section(tmp_path, "S1", table="counts")
    assert str(caught.value) == f"'{store}' has no table 'counts' (it has: none)."


def test_the_default_image_has_the_most_pixels_not_the_tallest_shape(tmp_path):
    """'wide' (200 x 60 = 12000 px) beats 'tall' (40 x 200 = 8000 px, taller than wide); spots in its pixels."""
    write_store(
        tmp_path / "S1.zarr",
        images={"tall": image(200, 40, {"global": scale(2.0)}), "wide": image(60, 200, {"global": identity()})},
    )
    section = spatialdata_store.read_section(tmp_path, "S1")
    assert section.uns["image_path"].endswith("images/wide")
    assert section.uns["image_size"] == [200, 60]
    np.testing.assert_allclose(section.obsm["spatial"], SPOTS)


def test_a_store_without_images_is_named(tmp_path):
    """No image at all: the reader says so and how to add the H&E, rather than failing inside max()."""
    store = write_store(tmp_path / "S1.zarr", images={})
    with pytest.raises(InputDataError) as caught:
        spatialdata_store.read_section(tmp_path, "S1")
    assert str(caught.value) == (
        f"'{store}' has no image (images: none). Add the H&E with spatialdata.models.Image2DModel."
    )


def test_global_is_preferred_over_an_earlier_named_shared_system(tmp_path):
    """Shared 'aligned' (image at 4x) and 'global' (image at 2x): 'global' is taken by default, 'aligned' on request."""
    write_store(
        tmp_path / "S1.zarr",
        images={"he": image(100, 100, {"aligned": scale(4.0), "global": scale(2.0)})},
        spot_systems={"aligned": identity(), "global": identity()},
    )
    section = spatialdata_store.read_section(tmp_path, "S1")
    np.testing.assert_allclose(section.obsm["spatial"], SPOTS / 2)
    aligned = spatialdata_store.read_section(tmp_path, "S1", coordinate_system="aligned")
    np.testing.assert_allclose(aligned.obsm["spatial"], SPOTS / 4)


def test_a_named_coordinate_system_that_is_not_shared_is_named_with_both_lists(tmp_path):
    """The message names the asked-for system, each element's systems in order, and the fix."""
    store = write_store(
        tmp_path / "S1.zarr",
        images={"he": image(100, 100, {"global": scale(2.0), "micron": scale(0.5)})},
        spot_systems={"aligned": identity(), "global": identity()},
    )
    with pytest.raises(InputDataError) as caught:
        spatialdata_store.read_section(tmp_path, "S1", coordinate_system="nope")
    assert str(caught.value) == (
        f"'{store}': shapes 'spots' and image 'he' share no coordinate system called 'nope' "
        f"(shapes: aligned, global; image: global, micron). {FIX}"
    )


def test_float32_radii_give_the_float64_median_diameter(tmp_path):
    """Radii 1, 1, 1+e, 1+e in float32 (e = 2**-23): the median diameter is 2 + e exactly, not rounded to 2."""
    one_up = np.nextafter(np.float32(1.0), np.float32(2.0))
    write_store(tmp_path / "S1.zarr", radius=np.array([1.0, 1.0, one_up, one_up], dtype=np.float32))
    section = spatialdata_store.read_section(tmp_path, "S1")
    assert section.uns["spot_diameter_px"] == 1.0 + float(one_up)
    assert section.uns["spot_diameter_px"] == 2.0 + 2.0**-23
