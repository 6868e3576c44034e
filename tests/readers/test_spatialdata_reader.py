"""SpatialData stores in and out, checked against scverse's own spatialdata and spatialdata-io readers."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from helpers.images import coordinate_image
from native_layouts import BARCODES, COUNTS, GENES, write_image
from test_visium_reader import SPOT_DIAMETER_FULLRES, _with_scanpy_images, make_section

from spahgc_kedro.errors import InputDataError
from spahgc_kedro.images import open_image, read_thumbnail
from spahgc_kedro.readers import spatialdata_store, visium

pytest.importorskip("spatialdata", reason='SpatialData interop is the optional extra: pip install -e ".[spatialdata]"')

WIDTH, HEIGHT = 300, 200


def hand_made_store(
    path: Path, *, shapes_system: str = "global", tables: int = 1, in_tissue: Any = None
) -> dict[str, np.ndarray]:
    """A store written with spatialdata's models, by hand: a locatable image registered at twice its pixel size,
    circles shifted by (10, 20) in their own frame, and a table whose rows run in reverse spot order."""
    import anndata as ad
    import spatialdata as sd
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Scale, Translation

    pixels = coordinate_image(WIDTH, HEIGHT)
    image = Image2DModel.parse(
        np.moveaxis(pixels, -1, 0),
        dims=("c", "y", "x"),
        scale_factors=[2],
        transformations={"global": Scale([2.0, 2.0], axes=("y", "x"))},
    )
    own = np.array([[90.0, 60.0], [250.0, 100.0], [410.0, 300.0], [530.0, 340.0]])
    spot_ids = pd.Index([f"s{i}" for i in range(len(own))])
    shapes = ShapesModel.parse(
        own,
        geometry=0,
        radius=np.full(len(own), 14.0),
        index=spot_ids,
        transformations={shapes_system: Translation([10.0, 20.0], axes=("x", "y"))},
    )
    counts = np.arange(len(own) * 3, dtype=np.float32).reshape(len(own), 3)[::-1]
    obs = pd.DataFrame({"region": pd.Categorical(["spots"] * len(own)), "spot": spot_ids[::-1]}, index=spot_ids[::-1])
    if in_tissue is not None:
        obs["in_tissue"] = in_tissue
    table = TableModel.parse(
        ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=["G1", "G2", "G3"])),
        region="spots",
        region_key="region",
        instance_key="spot",
    )
    tables_written = {f"table{i}" if i else "table": table for i in range(tables)}
    sd.SpatialData(images={"he": image}, shapes={"spots": shapes}, tables=tables_written).write(path)
    # by hand, in the table's row order: global = own + (10, 20); image pixel = global / 2
    return {
        "pixels": pixels,
        "xy": ((own + [10.0, 20.0]) / 2)[::-1],
        "counts": counts,
        "ids": np.asarray(spot_ids)[::-1],
    }


def test_hand_made_store_maps_spots_into_the_image_pixels(tmp_path):
    expected = hand_made_store(tmp_path / "S1.zarr")
    assert spatialdata_store.discover_sections(tmp_path) == ["S1"]
    section = spatialdata_store.read_section(tmp_path, "S1", spot_diameter_um=55.0)
    assert list(section.obs_names) == list(expected["ids"])
    np.testing.assert_allclose(section.obsm["spatial"], expected["xy"])
    np.testing.assert_array_equal(section.X.toarray(), expected["counts"])
    assert section.uns["spot_diameter_px"] == pytest.approx(14.0)  # a 28-unit circle, halved into image pixels
    assert section.uns["microns_per_pixel"] == pytest.approx(55.0 / 14.0)
    assert section.uns["image_size"] == [WIDTH, HEIGHT] and section.uns["platform"] == "visium"
    image = open_image(section.uns["image_path"])
    x, y = np.round(expected["xy"][2]).astype(int)
    np.testing.assert_array_equal(
        image.read(x - 8, y - 8, x + 8, y + 8), expected["pixels"][y - 8 : y + 8, x - 8 : x + 8]
    )
    thumbnail, full_size = read_thumbnail(section.uns["image_path"], max_side=100)
    assert full_size == (WIDTH, HEIGHT) and max(thumbnail.shape[:2]) <= 100


def test_table_rows_with_a_missing_in_tissue_flag_are_off_the_tissue(tmp_path):
    """Table rows (s3, s2, s1, s0) flagged 1, missing, 0, 1: only s3 and s0 are read, not a crash on the gap."""
    expected = hand_made_store(tmp_path / "S1.zarr", in_tissue=pd.array([1, None, 0, 1], dtype="Int64"))
    section = spatialdata_store.read_section(tmp_path, "S1", spot_diameter_um=55.0)
    assert list(section.obs_names) == ["s3", "s0"]
    np.testing.assert_allclose(section.obsm["spatial"], expected["xy"][[0, 3]])


@pytest.mark.parametrize("header", [False, True], ids=["space-ranger-1", "space-ranger-2+"])
def test_agrees_with_spatialdata_io_visium_and_reads_its_store_like_the_space_ranger_folder(tmp_path, header):
    """spatialdata-io's Visium reader on the Space Ranger files our Visium reader reads: the same barcodes, counts
    and pixel centres; the store it writes, read by our SpatialData reader, gives our Visium reader's section."""
    import tifffile
    from spatialdata_io import visium as sdio_visium

    raw = tmp_path / "spaceranger"
    section_dir = make_section(raw, header=header, image=False)
    pixels = coordinate_image(200, 150)
    tifffile.imwrite(section_dir / "full_res.tif", pixels, photometric="rgb")
    ours = visium.read_section(raw, "block1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = sdio_visium(
            _with_scanpy_images(section_dir), dataset_id="block1", fullres_image_file=section_dir / "full_res.tif"
        )
    table, circles = theirs.tables["table"], theirs.shapes["block1"]
    assert list(table.obs_names) == BARCODES == list(ours.obs_names)
    assert list(table.var_names) == GENES
    np.testing.assert_array_equal(np.asarray(table.X.todense()), COUNTS)
    centres = circles.loc[table.obs["spot_id"]]
    np.testing.assert_allclose(np.column_stack([centres.geometry.x, centres.geometry.y]), ours.obsm["spatial"])
    np.testing.assert_allclose(centres["radius"], SPOT_DIAMETER_FULLRES / 2)

    stores = tmp_path / "stores"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.write(stores / "block1.zarr")
    again = spatialdata_store.read_section(stores, "block1", spot_diameter_um=55.0)
    assert list(again.obs_names) == list(ours.obs_names)
    np.testing.assert_array_equal(again.X.toarray(), ours.X.toarray())
    np.testing.assert_allclose(again.obsm["spatial"], ours.obsm["spatial"])
    np.testing.assert_array_equal(again.obs["array_row"], ours.obs["array_row"])
    assert again.uns["spot_diameter_px"] == pytest.approx(SPOT_DIAMETER_FULLRES)
    assert again.uns["microns_per_pixel"] == pytest.approx(ours.uns["microns_per_pixel"])
    assert again.uns["image_size"] == ours.uns["image_size"]
    assert again.uns["image_path"].endswith("images/block1_full_image")  # the largest of full, hires, lowres
    window = (40, 30, 72, 62)
    np.testing.assert_array_equal(
        open_image(again.uns["image_path"]).read(*window), open_image(ours.uns["image_path"]).read(*window)
    )
    # a lower-resolution image of the store maps the same spots into its own pixels
    hires = spatialdata_store.read_section(stores, "block1", image="block1_hires_image")
    np.testing.assert_allclose(hires.obsm["spatial"], ours.obsm["spatial"] / 2)


def test_agrees_with_spatialdata_io_visium_hd_and_reads_its_store_like_the_binned_outputs(tmp_path):
    """spatialdata-io's Visium HD reader on the binned outputs our Visium HD reader reads: the same in-tissue bins,
    counts, centres and bin width; its store (one table per bin size, bins as squares) reads back the same."""
    import h5py
    from spatialdata_io import visium_hd as sdio_visium_hd
    from test_visium_hd_reader import write_bins

    from spahgc_kedro.readers import visium_hd

    raw = tmp_path / "hd"
    outs = raw / "HD1" / "outs"
    write_bins(outs, 16, 3, 4, off_tissue=(0, 0))
    write_bins(outs, 8, 6, 8, off_tissue=(1, 1))
    write_image(raw / "HD1" / "full.tif", size=(400, 300))
    # what spatialdata-io needs beyond what our reader reads: the feature slice's layout version, lowres scale
    with h5py.File(outs / "feature_slice.h5", "w") as slice_file:
        slice_file.attrs["metadata_json"] = json.dumps({"hd_layout_json": json.dumps({"file_format": "1.0"})})
    for factors in outs.rglob("scalefactors_json.json"):
        factors.write_text(json.dumps({**json.loads(factors.read_text()), "tissue_lowres_scalef": 0.01}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = sdio_visium_hd(outs, dataset_id="HD1", fullres_image_file=raw / "HD1" / "full.tif")
        theirs.write(tmp_path / "stores" / "HD1.zarr")
    for bin_um in (16, 8):
        ours = visium_hd.read_section(raw, "HD1", bin_um=bin_um)
        table = theirs.tables[f"square_{bin_um:03d}um"]
        table = table[table.obs["in_tissue"] == 1]
        order = table.obs_names.get_indexer(ours.obs_names)
        assert (order >= 0).all() and len(order) == table.n_obs
        np.testing.assert_array_equal(np.asarray(table.X.todense())[order], ours.X.toarray())
        squares = theirs.shapes[f"HD1_square_{bin_um:03d}um"].loc[table.obs["location_id"].to_numpy()[order]]
        centroids = squares.geometry.centroid
        np.testing.assert_allclose(np.column_stack([centroids.x, centroids.y]), ours.obsm["spatial"])
        np.testing.assert_allclose(np.sqrt(squares.geometry.area), ours.uns["spot_diameter_px"])

        again = spatialdata_store.read_section(
            tmp_path / "stores", "HD1", table=f"square_{bin_um:03d}um", spot_diameter_um=float(bin_um)
        )
        assert sorted(again.obs_names) == sorted(ours.obs_names)
        again = again[list(ours.obs_names)]
        np.testing.assert_array_equal(again.X.toarray(), ours.X.toarray())
        np.testing.assert_allclose(again.obsm["spatial"], ours.obsm["spatial"])
        assert again.uns["spot_diameter_px"] == pytest.approx(ours.uns["spot_diameter_px"])
        assert again.uns["microns_per_pixel"] == pytest.approx(ours.uns["microns_per_pixel"])


def test_several_tables_must_be_named(tmp_path):
    hand_made_store(tmp_path / "S1.zarr", tables=2)
    with pytest.raises(InputDataError, match=r"2 tables \(table, table1\).*reader_options\.table"):
        spatialdata_store.read_section(tmp_path, "S1")
    assert spatialdata_store.read_section(tmp_path, "S1", table="table1").n_obs == 4
    with pytest.raises(InputDataError, match="no table 'counts' .*table, table1"):
        spatialdata_store.read_section(tmp_path, "S1", table="counts")


def test_shapes_and_image_without_a_shared_coordinate_system_fail(tmp_path):
    hand_made_store(tmp_path / "S1.zarr", shapes_system="aligned")
    with pytest.raises(InputDataError, match=r"share no coordinate system \(shapes: aligned; image: global\)"):
        spatialdata_store.read_section(tmp_path, "S1")


def test_missing_store_and_missing_image_are_named(tmp_path):
    with pytest.raises(InputDataError, match="No SpatialData stores found"):
        spatialdata_store.discover_sections(tmp_path)
    with pytest.raises(InputDataError, match=r"Missing SpatialData store: '.*S9\.zarr'"):
        spatialdata_store.read_section(tmp_path, "S9")
    hand_made_store(tmp_path / "S1.zarr")
    with pytest.raises(InputDataError, match="has no image 'hires' .images: he."):
        spatialdata_store.read_section(tmp_path, "S1", image="hires")


def edited_store(tmp_path: Path, monkeypatch, edit) -> Path:
    """The hand-made store as spatialdata reads it, then `edit(sdata)` in memory (to make what TableModel refuses
    to write): read_section of `S1` reads the edited store. Returns the store's path."""
    import spatialdata as sd

    path = tmp_path / "S1.zarr"
    hand_made_store(path)
    sdata = sd.read_zarr(path)
    edit(sdata)
    monkeypatch.setattr(spatialdata_store, "read_store", lambda _: sdata)
    return path


def read_error(tmp_path: Path, **options) -> str:
    """The InputDataError read_section of the edited store `S1` raises."""
    with pytest.raises(InputDataError) as error:
        spatialdata_store.read_section(tmp_path, "S1", **options)
    return str(error.value)


FIX_REGION = (
    "Parse it with spatialdata.models.TableModel.parse(table, region=<spots>, region_key=..., instance_key=...)."
)


@pytest.mark.parametrize(
    ("region", "annotated"),
    [(None, "nothing"), (["spots", "cells"], "spots, cells"), ("cells", "cells")],
    ids=["no-attributes", "two-regions", "unknown-region"],
)
def test_a_table_must_annotate_exactly_one_shapes_element(tmp_path, monkeypatch, region, annotated):
    def annotate(sdata) -> None:
        uns = sdata.tables["table"].uns
        if region is None:
            del uns["spatialdata_attrs"]
        else:
            uns["spatialdata_attrs"]["region"] = region

    path = edited_store(tmp_path, monkeypatch, annotate)
    assert read_error(tmp_path) == (
        f"'{path}': table 'table' must annotate exactly one shapes element (the spots); it annotates {annotated}. "
        + FIX_REGION
    )


def test_a_missing_image_lists_every_image_of_the_store(tmp_path, monkeypatch):
    def add_image(sdata) -> None:
        sdata.images["dapi"] = sdata.images["he"]

    path = edited_store(tmp_path, monkeypatch, add_image)
    assert read_error(tmp_path, image="hires") == (
        f"'{path}' has no image 'hires' (images: dapi, he). Add the H&E with spatialdata.models.Image2DModel."
    )


def test_duplicated_table_rows_name_the_table(tmp_path, monkeypatch):
    def duplicate(sdata) -> None:
        sdata.tables["table"].obs_names = ["s3", "s3", "s1", "s0"]

    path = edited_store(tmp_path, monkeypatch, duplicate)
    assert read_error(tmp_path) == (
        f"1 duplicated table rows in '{path / 'tables' / 'table'}' (e.g. s3). Each spot must appear once: remove "
        "or rename the duplicates."
    )


def test_table_rows_naming_spots_the_shapes_lack_are_counted_and_named(tmp_path, monkeypatch):
    def rename(sdata) -> None:
        sdata.tables["table"].obs["spot"] = ["s3", "s9", "s8", "s0"]

    path = edited_store(tmp_path, monkeypatch, rename)
    assert read_error(tmp_path) == (
        f"'{path}': 2 rows of table 'table' name spots that shapes 'spots' lacks (e.g. 's9' in obs['spot']). The "
        "table and shapes must be from the same section."
    )


def test_a_folder_that_is_not_a_store_is_named(tmp_path):
    (tmp_path / "S1.zarr").mkdir()
    (tmp_path / "S1.zarr" / "notes.txt").write_text("not zarr")
    with pytest.raises(InputDataError, match=r"Cannot read '.*S1\.zarr' as a SpatialData store"):
        spatialdata_store.read_section(tmp_path, "S1")


def test_without_the_extra_the_message_says_how_to_install_it(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "spatialdata", None)
    with pytest.raises(InputDataError, match=r'needs the spatialdata package: pip install -e "\.\[spatialdata\]"'):
        spatialdata_store.read_section(tmp_path, "S1")


def test_prediction_store_round_trip(tmp_path):
    """A new section's prediction written as a SpatialData store opens in spatialdata with the same values, spots
    and an H&E registered onto them, and reads back through our reader at the same pixels."""
    import anndata as ad
    import spatialdata as sd
    from spatialdata.transformations import get_transformation

    from spahgc_kedro.datasets import SpatialDataDataset
    from spahgc_kedro.pipelines.predict.nodes import add_scanpy_image
    from spahgc_kedro.predictions import prediction_spatialdata

    expected = hand_made_store(tmp_path / "raw" / "S1.zarr")
    section = spatialdata_store.read_section(tmp_path / "raw", "S1", spot_diameter_um=55.0)
    rng = np.random.default_rng(0)
    prediction = ad.AnnData(X=rng.random((section.n_obs, 5), dtype=np.float32))
    prediction.obs_names, prediction.var_names = section.obs_names, [f"G{i}" for i in range(5)]
    prediction.layers["uncertainty"] = rng.random((section.n_obs, 5), dtype=np.float32)
    # a rotated member's layer: '@' is not allowed in a SpatialData name, and fold_A1_A2 is already taken
    prediction.layers["fold_A1@A2"] = rng.random((section.n_obs, 5), dtype=np.float32)
    prediction.layers["fold_A1_A2"] = np.zeros((section.n_obs, 5), dtype=np.float32)
    prediction.obsm["spatial"] = section.obsm["spatial"]
    prediction.uns["section_id"] = "S1"
    add_scanpy_image(prediction, section, max_side=150)

    store = tmp_path / "out" / "S1.zarr"
    SpatialDataDataset(filepath=str(store)).save(prediction_spatialdata(prediction, "S1"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = sd.read_zarr(store)
    table = back.tables["predictions"]
    np.testing.assert_array_equal(table.X, prediction.X)
    np.testing.assert_array_equal(table.layers["uncertainty"], prediction.layers["uncertainty"])
    np.testing.assert_array_equal(table.layers["fold_A1_A2_2"], prediction.layers["fold_A1@A2"])
    np.testing.assert_array_equal(table.layers["fold_A1_A2"], 0)
    assert dict(table.uns["original_names"]) == {"layers": {"fold_A1_A2_2": "fold_A1@A2"}}
    assert "fold_A1@A2" in prediction.layers  # the caller's AnnData keeps its names
    assert "spatial" not in table.uns
    spots = back.shapes["spots"].loc[table.obs["spot_id"]]
    np.testing.assert_allclose(np.column_stack([spots.geometry.x, spots.geometry.y]), expected["xy"])
    np.testing.assert_allclose(spots["radius"], 7.0)
    # the 150-px thumbnail of the 300-px image is drawn at twice its pixel size: it covers the full resolution
    scale = get_transformation(back.images["he"], "global").to_affine_matrix(("x", "y"), ("x", "y"))
    np.testing.assert_allclose(np.diag(scale)[:2], [2.0, 2.0])
    assert back.images["he"].shape == (3, 100, 150)

    again = spatialdata_store.read_section(tmp_path / "out", "S1", table="predictions")
    np.testing.assert_allclose(again.obsm["spatial"], expected["xy"] / 2)  # in the thumbnail's pixels
    np.testing.assert_allclose(again.X.toarray(), prediction.X, rtol=1e-6)

    # saving again replaces the store whole, leaving no partial folder beside it
    SpatialDataDataset(filepath=str(store)).save(prediction_spatialdata(prediction[:2].copy(), "S1"))
    assert sd.read_zarr(store).tables["predictions"].n_obs == 2
    assert sorted(p.name for p in store.parent.iterdir()) == ["S1.zarr"]


def test_export_node_follows_the_parameter(monkeypatch):
    from spahgc_kedro.errors import ParameterError
    from spahgc_kedro.pipelines.predict import nodes

    assert nodes.export_new_predictions({"S1": object()}, {"spatialdata": False}) == {}
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert nodes.export_new_predictions({"S1": object()}, {"spatialdata": "auto"}) == {}
    with pytest.raises(ParameterError, match=r'pip install -e "\.\[spatialdata\]"'):
        nodes.export_new_predictions({"S1": object()}, {"spatialdata": True})


def test_store_layout_written_by_spatialdata_is_what_the_image_reader_expects(tmp_path):
    """The OME-Zarr metadata our image backend reads: multiscales with c/y/x axes and level paths."""
    hand_made_store(tmp_path / "S1.zarr")
    meta = json.loads((tmp_path / "S1.zarr" / "images" / "he" / "zarr.json").read_text())
    entry = meta["attributes"]["ome"]["multiscales"][0]
    assert [axis["name"] for axis in entry["axes"]] == ["c", "y", "x"]
    assert len(entry["datasets"]) == 2


def test_square_bins_are_spots_as_wide_as_the_square(tmp_path):
    """Polygon spots (spatialdata-io writes Visium HD bins as squares): centre = centroid, diameter = side."""
    import anndata as ad
    import geopandas as gpd
    import spatialdata as sd
    from shapely.geometry import box
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity, Scale

    centres = np.array([[40.0, 30.0], [56.0, 30.0], [40.0, 46.0]])
    squares = gpd.GeoDataFrame(geometry=[box(x - 8, y - 8, x + 8, y + 8) for x, y in centres], index=["b0", "b1", "b2"])
    table = ad.AnnData(X=np.eye(3, dtype=np.float32), obs=pd.DataFrame(index=["b0", "b1", "b2"]))
    table.obs["region"] = pd.Categorical(["bins"] * 3)
    table.obs["bin"] = table.obs_names.to_numpy()
    sd.SpatialData(
        images={
            "he": Image2DModel.parse(
                np.zeros((3, 40, 50), np.uint8),
                dims=("c", "y", "x"),
                transformations={"global": Scale([2.0, 2.0], axes=("y", "x"))},
            )
        },
        shapes={"bins": ShapesModel.parse(squares, transformations={"global": Identity()})},
        tables={"table": TableModel.parse(table, region="bins", region_key="region", instance_key="bin")},
    ).write(tmp_path / "HD.zarr")
    section = spatialdata_store.read_section(tmp_path, "HD", spot_diameter_um=16.0)
    np.testing.assert_allclose(section.obsm["spatial"], centres / 2)
    assert section.uns["spot_diameter_px"] == pytest.approx(8.0)
    assert section.uns["microns_per_pixel"] == pytest.approx(2.0)
    assert section.uns["spot_spacing_px"] == pytest.approx(8.0)
