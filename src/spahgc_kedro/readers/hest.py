"""HEST-1k samples (Hugging Face `MahmoodLab/hest`), one section per sample id.

    <raw_dir>/st/<id>.h5ad        raw counts; spot centres in obs `pxl_col_in_fullres` (x) and
                                  `pxl_row_in_fullres` (y), else obsm['spatial'] as (x, y) full-res pixels
    <raw_dir>/wsis/<id>.tif       pyramidal full-resolution H&E (only its header is read here)
    <raw_dir>/metadata/<id>.json  pixel_size_um_estimated, spot_diameter (um), patient, st_technology, ...
Covers HEST's Visium samples and its legacy ST ones (e.g. HER2+ SPA119-SPA154, cSCC NCBI759-NCBI770).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from spahgc_kedro.hints import AnnData
from spahgc_kedro.schema import Obsm, Uns

from .common import InputDataError, array_rowcol, build_section, check_unique, flag_set, require_file

HEST_LAYOUT = "<raw_dir>/st/<id>.h5ad, <raw_dir>/wsis/<id>.tif and <raw_dir>/metadata/<id>.json (HEST-1k)"
# HEST `st_technology` values -> the platform names of the standard section
PLATFORMS = {"visium": "visium", "spatial transcriptomics": "legacy_st"}


def discover_sections(raw_dir: str | Path) -> list[str]:
    """Sample ids with an st/<id>.h5ad under `raw_dir`."""
    found = sorted(p.stem for p in (Path(raw_dir) / "st").glob("*.h5ad"))
    if not found:
        raise InputDataError(f"No HEST samples found in '{raw_dir}'. Expected layout: {HEST_LAYOUT}")
    return found


def spot_centres(adata: AnnData, st_path: Path) -> np.ndarray:
    """(x, y) full-resolution pixels: HEST's named obs columns (x = pxl_col_in_fullres), else obsm['spatial'];
    when both are there they must agree (a swapped copy is a broken file, not a choice)."""
    named = {"pxl_col_in_fullres", "pxl_row_in_fullres"} <= set(adata.obs.columns)
    if not named and Obsm.SPATIAL not in adata.obsm:
        raise InputDataError(
            f"'{st_path}' has neither obs pxl_col_in_fullres/pxl_row_in_fullres nor obsm['spatial'] spot centres; "
            "expected a HEST-1k st/ file."
        )
    obsm = np.asarray(adata.obsm[Obsm.SPATIAL], dtype=np.float64)[:, :2] if Obsm.SPATIAL in adata.obsm else None
    if not named:
        return obsm
    xy = adata.obs[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(dtype=np.float64)
    if obsm is not None and not np.allclose(obsm, xy, atol=0.5, equal_nan=True):
        raise InputDataError(
            f"'{st_path}': obsm['spatial'] and obs pxl_col_in_fullres/pxl_row_in_fullres disagree (x/y swapped or "
            "rescaled?); HEST writes them equal. Re-download the sample."
        )
    return xy


def _platform(technology: str | None) -> str:
    """Standard platform name for HEST's `st_technology` (lower-cased as is when not Visium or legacy ST)."""
    if not technology:
        return "visium"
    name = technology.strip().lower()
    return PLATFORMS.get(name, name.replace(" ", "_"))


def read_section(raw_dir: str | Path, section_id: str) -> AnnData:
    """Read one HEST sample into the standard AnnData."""
    import anndata as ad

    raw_dir = Path(raw_dir)
    st_path = require_file(raw_dir / "st" / f"{section_id}.h5ad", f"counts of {section_id}", HEST_LAYOUT)
    image = require_file(raw_dir / "wsis" / f"{section_id}.tif", f"whole-slide image of {section_id}", HEST_LAYOUT)
    meta_path = require_file(raw_dir / "metadata" / f"{section_id}.json", f"metadata of {section_id}", HEST_LAYOUT)
    meta = json.loads(meta_path.read_text())
    try:
        adata = ad.read_h5ad(st_path)
    except OSError as err:
        raise InputDataError(f"Cannot read '{st_path}': {err}. Re-download it.") from err
    check_unique(adata.obs_names, "barcodes", st_path)
    if "in_tissue" in adata.obs.columns:
        adata = adata[flag_set(adata.obs["in_tissue"])]
    xy = spot_centres(adata, st_path)
    pixel_size = float(meta.get("pixel_size_um_estimated") or math.nan)
    diameter_um = float(meta.get("spot_diameter") or math.nan)
    section = build_section(
        adata.X,
        list(adata.var_names),
        list(adata.obs_names),
        xy,
        array_rowcol(adata.obs, xy),
        section_id=section_id,
        platform=_platform(meta.get("st_technology")),
        image=image,
        microns_per_pixel=pixel_size,
        spot_diameter_px=diameter_um / pixel_size,
    )
    if meta.get("patient") is not None:
        section.uns[Uns.PATIENT_ID] = str(meta["patient"])
    return section
