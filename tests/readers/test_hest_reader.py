"""HEST-1k reader on tiny generated samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from native_layouts import BARCODES, COUNTS, GENES, write_image

from spahgc_kedro.errors import InputDataError
from spahgc_kedro.readers import hest

XY = np.array([[20.0 + 25.0 * i, 30.0 + 40.0 * (i % 2)] for i in range(6)])
SQUARE_XY = np.array([[20.0 + 40.0 * (i % 3), 30.0 + 40.0 * (i // 3)] for i in range(6)])


def make_sample(
    raw: Path,
    sample_id: str = "NCBI681",
    *,
    meta: dict | None = None,
    array: bool = True,
    names: list[str] = BARCODES,
    xy: np.ndarray = XY,
) -> None:
    """Write one HEST sample: st/<id>.h5ad, wsis/<id>.tif, metadata/<id>.json."""
    import anndata as ad
    import scipy.sparse as sp

    obs = pd.DataFrame(index=names)
    if array:
        obs["array_row"] = [i % 2 for i in range(6)]
        obs["array_col"] = [i // 2 * 2 + i % 2 for i in range(6)]
    adata = ad.AnnData(X=sp.csr_matrix(COUNTS.astype(np.float32)), obs=obs, var=pd.DataFrame(index=GENES))
    adata.obsm["spatial"] = xy.copy()
    (raw / "st").mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(raw / "st" / f"{sample_id}.h5ad")
    write_image(raw / "wsis" / f"{sample_id}.tif")
    (raw / "metadata").mkdir(parents=True, exist_ok=True)
    meta = (
        meta
        if meta is not None
        else {"pixel_size_um_estimated": 0.5, "spot_diameter": 55.0, "patient": "Patient 8", "st_technology": "Visium"}
    )
    (raw / "metadata" / f"{sample_id}.json").write_text(json.dumps(meta))


def test_reads_visium_sample(tmp_path):
    make_sample(tmp_path)
    make_sample(tmp_path, "NCBI682")
    assert hest.discover_sections(tmp_path) == ["NCBI681", "NCBI682"]
    adata = hest.read_section(tmp_path, "NCBI681")
    assert list(adata.obs_names) == BARCODES
    assert list(adata.var_names) == GENES
    np.testing.assert_array_equal(adata.X.toarray(), COUNTS)
    np.testing.assert_allclose(adata.obsm["spatial"], XY)
    assert adata.uns["platform"] == "visium"
    assert adata.uns["patient_id"] == "Patient 8"
    assert adata.uns["microns_per_pixel"] == 0.5
    assert adata.uns["spot_diameter_px"] == pytest.approx(110.0)
    assert adata.uns["image_size"] == [200, 150]


@pytest.mark.parametrize("spot_names", [True, False])
def test_legacy_st_sample_without_patient(tmp_path, spot_names):
    meta = {"pixel_size_um_estimated": 1.0, "st_technology": "Spatial Transcriptomics", "spot_diameter": 100.0}
    # no array coordinates in the table: from `<x>x<y>` names, else a grid of the centres
    if spot_names:
        names = [f"{3 + i % 3}x{7 + i // 3}" for i in range(6)]
        expected_rows, expected_cols = [7, 7, 7, 8, 8, 8], [3, 4, 5, 3, 4, 5]
    else:
        names = [f"spot{i}" for i in range(6)]
        expected_rows, expected_cols = [0, 0, 0, 1, 1, 1], [0, 1, 2, 0, 1, 2]
    make_sample(tmp_path, "SPA119", meta=meta, array=False, names=names, xy=SQUARE_XY)
    adata = hest.read_section(tmp_path, "SPA119")
    assert adata.uns["platform"] == "legacy_st"
    assert "patient_id" not in adata.uns
    assert adata.obs["array_row"].tolist() == expected_rows
    assert adata.obs["array_col"].tolist() == expected_cols


def test_spots_outside_image_fail(tmp_path):
    make_sample(tmp_path)
    write_image(tmp_path / "wsis" / "NCBI681.tif", size=(100, 100))
    with pytest.raises(InputDataError, match="outside"):
        hest.read_section(tmp_path, "NCBI681")


@pytest.mark.parametrize("missing", ["wsis/NCBI681.tif", "metadata/NCBI681.json", "st/NCBI681.h5ad"])
def test_missing_file_is_named(tmp_path, missing):
    make_sample(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(InputDataError, match=missing.replace(".", r"\.")):
        hest.read_section(tmp_path, "NCBI681")


def test_no_samples(tmp_path):
    with pytest.raises(InputDataError, match=r"st/<id>\.h5ad"):
        hest.discover_sections(tmp_path)


@pytest.mark.filterwarnings("ignore:Observation names are not unique")
def test_duplicated_barcodes_fail(tmp_path):
    make_sample(tmp_path, names=BARCODES[:5] + BARCODES[:1])
    with pytest.raises(InputDataError, match=r"duplicated barcodes .*NCBI681\.h5ad"):
        hest.read_section(tmp_path, "NCBI681")


def write_hest_like_sample(raw: Path, sample_id: str = "TENX99", obsm: bool = True) -> np.ndarray:
    """A sample as HEST-1k publishes it: st/<id>.h5ad with in_tissue, array and pxl_*_in_fullres columns
    (x = column, y = row) mirrored in obsm['spatial']; metadata/<id>.json with its keys; wsis/<id>.tif a
    tiled pyramidal TIFF whose level 0 has a 4 px marker of a spot-specific colour at each spot centre."""
    import anndata as ad
    import scipy.sparse as sp
    import tifffile

    width, height = 1024, 768
    xy = np.array([[150.0 + 120.0 * i, 200.0 + 160.0 * (i % 2)] for i in range(6)])
    obs = pd.DataFrame(
        {
            "in_tissue": [1, 1, 1, 1, 1, 0],
            "array_row": [i % 2 for i in range(6)],
            "array_col": [i // 2 * 2 + i % 2 for i in range(6)],
            "pxl_col_in_fullres": xy[:, 0],
            "pxl_row_in_fullres": xy[:, 1],
        },
        index=BARCODES,
    )
    adata = ad.AnnData(X=sp.csr_matrix(COUNTS.astype(np.float32)), obs=obs, var=pd.DataFrame(index=GENES))
    if obsm:
        adata.obsm["spatial"] = xy.copy()
    (raw / "st").mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(raw / "st" / f"{sample_id}.h5ad")
    level0 = np.full((height, width, 3), 230, dtype=np.uint8)
    for i, (x, y) in enumerate(xy.astype(int)):
        level0[y - 2 : y + 2, x - 2 : x + 2] = (40 * i, 255 - 40 * i, 100)
    (raw / "wsis").mkdir(parents=True, exist_ok=True)
    with tifffile.TiffWriter(raw / "wsis" / f"{sample_id}.tif", bigtiff=True) as tif:
        tif.write(level0, tile=(256, 256), photometric="rgb", subifds=2, compression="zlib")
        for factor in (2, 4):
            tif.write(level0[::factor, ::factor], tile=(256, 256), photometric="rgb", subfiletype=1)
    (raw / "metadata").mkdir(parents=True, exist_ok=True)
    meta = {
        "pixel_size_um_estimated": 0.2737,
        "spot_diameter": 55.0,
        "inter_spot_dist": 100.0,
        "st_technology": "Visium",
        "species": "Homo sapiens",
        "patient": None,
    }
    (raw / "metadata" / f"{sample_id}.json").write_text(json.dumps(meta))
    return xy


def test_hest_convention_pixel_columns_are_x_column_and_y_row(tmp_path):
    xy = write_hest_like_sample(tmp_path, obsm=False)
    adata = hest.read_section(tmp_path, "TENX99")
    assert list(adata.obs_names) == BARCODES[:5]  # in_tissue 0 dropped
    np.testing.assert_array_equal(adata.obsm["spatial"], xy[:5])


def test_hest_convention_obsm_that_disagrees_with_the_pixel_columns_is_refused(tmp_path):
    import anndata as ad

    write_hest_like_sample(tmp_path)
    path = tmp_path / "st" / "TENX99.h5ad"
    adata = ad.read_h5ad(path)
    adata.obsm["spatial"] = adata.obsm["spatial"][:, ::-1].copy()
    adata.write_h5ad(path)
    with pytest.raises(InputDataError, match="disagree"):
        hest.read_section(tmp_path, "TENX99")


def test_hest_convention_metadata_gives_the_scale_and_spot_size(tmp_path):
    write_hest_like_sample(tmp_path)
    adata = hest.read_section(tmp_path, "TENX99")
    assert adata.uns["microns_per_pixel"] == 0.2737
    assert adata.uns["spot_diameter_px"] == pytest.approx(55.0 / 0.2737)
    assert adata.uns["platform"] == "visium"
    assert "patient_id" not in adata.uns  # HEST's null patient: the preset's rule decides


def test_hest_convention_pyramidal_wsi_is_read_at_full_resolution_at_each_spot(tmp_path):
    from spahgc_kedro.images import open_image
    from spahgc_kedro.patches import read_patch

    xy = write_hest_like_sample(tmp_path)
    adata = hest.read_section(tmp_path, "TENX99")
    assert adata.uns["image_size"] == [1024, 768]  # level 0, not a pyramid level
    image = open_image(adata.uns["image_path"])
    for i, centre in enumerate(adata.obsm["spatial"]):
        patch = read_patch(image, tuple(centre), 16, 255)
        assert tuple(patch[8, 8]) == (40 * i, 255 - 40 * i, 100), i
    assert tuple(read_patch(image, tuple(xy[0] + 40), 16, 255)[8, 8]) == (230, 230, 230)


@pytest.mark.parametrize(
    ("missing", "what"),
    [("st/NCBI681.h5ad", "counts"), ("wsis/NCBI681.tif", "whole-slide image"), ("metadata/NCBI681.json", "metadata")],
)
def test_a_missing_file_says_what_it_is_and_the_layout(tmp_path, missing, what):
    make_sample(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(InputDataError) as error:
        hest.read_section(tmp_path, "NCBI681")
    assert str(error.value) == f"Missing {what} of NCBI681: '{tmp_path / missing}'. Expected layout: {hest.HEST_LAYOUT}"


@pytest.mark.parametrize(
    ("technology", "platform"),
    [
        (None, "visium"),
        ("", "visium"),
        (" Visium ", "visium"),
        ("Spatial Transcriptomics", "legacy_st"),
        ("Visium HD", "visium_hd"),
    ],
)
def test_hest_st_technology_names_the_platform(technology, platform):
    assert hest._platform(technology) == platform


def test_spot_centres_agree_within_half_a_pixel_and_use_the_first_two_obsm_columns(tmp_path):
    import anndata as ad

    xy = np.array([[10.0, 20.0], [30.0, 40.0]])
    adata = ad.AnnData(
        obs=pd.DataFrame({"pxl_col_in_fullres": xy[:, 0], "pxl_row_in_fullres": xy[:, 1]}, index=["a", "b"])
    )
    adata.obsm["spatial"] = np.column_stack([xy + 0.4, [1.0, 1.0]])  # rounding, and a third column some copies carry
    np.testing.assert_array_equal(hest.spot_centres(adata, tmp_path / "s.h5ad"), xy)
    del adata.obs["pxl_col_in_fullres"]
    np.testing.assert_array_equal(hest.spot_centres(adata, tmp_path / "s.h5ad"), xy + 0.4)
    adata.obs["pxl_col_in_fullres"] = xy[:, 0]
    adata.obsm["spatial"] = np.column_stack([xy[:, 0] + 0.6, xy[:, 1]])
    with pytest.raises(InputDataError) as error:
        hest.spot_centres(adata, tmp_path / "s.h5ad")
    assert str(error.value) == (
        f"'{tmp_path / 's.h5ad'}': obsm['spatial'] and obs pxl_col_in_fullres/pxl_row_in_fullres disagree (x/y swapped "
        "or rescaled?); HEST writes them equal. Re-download the sample."
    )
    del adata.obsm["spatial"], adata.obs["pxl_row_in_fullres"]
    with pytest.raises(InputDataError) as error:
        hest.spot_centres(adata, tmp_path / "s.h5ad")
    assert str(error.value) == (
        f"'{tmp_path / 's.h5ad'}' has neither obs pxl_col_in_fullres/pxl_row_in_fullres nor obsm['spatial'] spot "
        "centres; expected a HEST-1k st/ file."
    )
