"""Checks and helpers every reader shares, so bad input fails the same clear way."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)


class InputDataError(ValueError):
    """Raw input that cannot be turned into a standard section; the message says what to fix."""


def require_file(path: Path, what: str, layout: str) -> Path:
    """Return `path` if it exists, else fail naming the file and the expected layout."""
    if not path.exists():
        raise InputDataError(f"Missing {what}: '{path}'. Expected layout: {layout}")
    return path


def numeric_counts(table: pd.DataFrame, source: Path) -> pd.DataFrame:
    """Return the count table as numbers, or fail naming the first non-numeric column."""
    if all(dtype.kind in "iuf" for dtype in table.dtypes.unique()):
        return table.fillna(0)
    converted = table.apply(pd.to_numeric, errors="coerce")
    bad = converted.isna() & table.notna()
    if bad.to_numpy().any():
        column = bad.any(axis=0).idxmax()
        row = bad[column].idxmax()
        raise InputDataError(
            f"Non-numeric count '{table.loc[row, column]}' for gene '{column}', spot '{row}' "
            f"in '{source}'. Counts must be numbers: check the file is the raw count matrix."
        )
    return converted.fillna(0)


def check_unique(ids: pd.Index, what: str, source: Path) -> None:
    """Fail when spot ids repeat, listing a few."""
    dup = ids[ids.duplicated()].unique()
    if len(dup):
        raise InputDataError(
            f"{len(dup)} duplicated {what} in '{source}' (e.g. {', '.join(map(str, dup[:3]))}). "
            "Each spot must appear once: remove or rename the duplicates."
        )


def intersect_spots(counts_ids: pd.Index, coord_ids: pd.Index, section_id: str) -> pd.Index:
    """Spots present in both tables, logging how many each side loses."""
    common = counts_ids.intersection(coord_ids, sort=False)
    only_counts, only_coords = len(counts_ids) - len(common), len(coord_ids) - len(common)
    if only_counts or only_coords:
        logger.warning(
            "Section %s: dropped %d spots with counts but no coordinates and %d with "
            "coordinates but no counts (kept %d).",
            section_id,
            only_counts,
            only_coords,
            len(common),
        )
    if not len(common):
        raise InputDataError(
            f"Section {section_id}: no spot is in both the count table and the spot table; "
            "check that both files belong to the same section."
        )
    return common


def check_inside_image(xy: np.ndarray, image_size: tuple[int, int], section_id: str, image: Path) -> None:
    """Fail when spot centres fall outside the image (wrong image or wrong scale)."""
    width, height = image_size
    outside = (xy[:, 0] < 0) | (xy[:, 1] < 0) | (xy[:, 0] >= width) | (xy[:, 1] >= height)
    if outside.any():
        raise InputDataError(
            f"Section {section_id}: {int(outside.sum())} of {len(xy)} spot centres lie outside "
            f"the {width} x {height} px image '{image}' (max x {xy[:, 0].max():.0f}, max y "
            f"{xy[:, 1].max():.0f}). Use the full-resolution image the coordinates refer to."
        )


def spot_spacing(xy: np.ndarray) -> float:
    """Median distance from each spot centre to its nearest neighbour."""
    from scipy.spatial import cKDTree

    if len(xy) < 2:
        return float("nan")
    dist, _ = cKDTree(xy).query(xy, k=2)
    return float(np.median(dist[:, 1]))


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image without decoding its pixels."""
    if path.suffix.lower() in {".tif", ".tiff", ".svs", ".btf"}:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            shape = tif.series[0].levels[0].shape if tif.series else tif.pages[0].shape
            axes = tif.series[0].levels[0].axes if tif.series else "YXS"
        return int(shape[axes.index("X")]), int(shape[axes.index("Y")])
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as img:
            return img.size
    except OSError as err:
        raise InputDataError(f"Cannot read image '{path}': {err}. Re-download or re-export it.") from err


def build_section(
    counts: pd.DataFrame | object,
    genes: list[str],
    spot_ids: list[str],
    xy: np.ndarray,
    array_rowcol: np.ndarray,
    *,
    section_id: str,
    platform: str,
    image: Path,
    microns_per_pixel: float = float("nan"),
    spot_diameter_px: float = float("nan"),
):
    """Assemble the standard AnnData (docs/design.md) after the shared checks."""
    import anndata as ad
    import scipy.sparse as sp

    size = image_size(image)
    check_inside_image(xy, size, section_id, image)
    matrix = sp.csr_matrix(counts, dtype=np.float32)
    adata = ad.AnnData(X=matrix)
    adata.obs_names = [str(s) for s in spot_ids]
    adata.var_names = [str(g) for g in genes]
    if not adata.var_names.is_unique:
        adata.var_names_make_unique()
    adata.obs["array_row"] = np.asarray(array_rowcol[:, 0], dtype=np.int64)
    adata.obs["array_col"] = np.asarray(array_rowcol[:, 1], dtype=np.int64)
    adata.obsm["spatial"] = np.asarray(xy, dtype=np.float64)
    adata.uns.update(
        section_id=section_id,
        platform=platform,
        image_path=str(Path(image).resolve()),
        image_size=[int(size[0]), int(size[1])],
        microns_per_pixel=float(microns_per_pixel),
        spot_diameter_px=float(spot_diameter_px),
        spot_spacing_px=spot_spacing(adata.obsm["spatial"]),
    )
    return adata
