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
