"""Checks and helpers every reader shares, so bad input fails the same clear way."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from spahgc_kedro.schema import Obs, Obsm, Uns

from ..errors import InputDataError
from ..images import check_spots_inside, image_size

logger = logging.getLogger(__name__)
# legacy ST spot names: "<x>x<y>" array coordinates
_ST_SPOT_NAME = r"^(?P<x>\d+(?:\.\d+)?)x(?P<y>\d+(?:\.\d+)?)$"


def require_file(path: Path, what: str, layout: str) -> Path:
    """Return `path` if it exists, else fail naming the file and the expected layout."""
    if not path.exists():
        raise InputDataError(f"Missing {what}: '{path}'. Expected layout: {layout}")
    return path


def read_table(path: Path, **read_csv_args) -> pd.DataFrame:
    """`pd.read_csv(path, ...)`, failing with the file's name when it is not a readable table (binary, a
    broken gzip, wrong encoding, empty)."""
    try:
        return pd.read_csv(path, **read_csv_args)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise InputDataError(
            f"Cannot read '{path}' as a table ({type(error).__name__}: {error}). Replace it with the file as the "
            "instrument or the dataset's download wrote it."
        ) from error


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


def flag_set(values: pd.Series) -> np.ndarray:
    """Rows whose flag (`in_tissue`, `selected`) is the number 1; a blank, missing or non-numeric flag is not set."""
    return (pd.to_numeric(values, errors="coerce") == 1).to_numpy(dtype=bool, na_value=False)


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


def spot_spacing(xy: np.ndarray) -> float:
    """Median distance from each spot centre to its nearest neighbour."""
    from scipy.spatial import cKDTree

    if len(xy) < 2:
        return float("nan")
    dist, _ = cKDTree(xy).query(xy, k=2)
    return float(np.median(dist[:, 1]))


def array_rowcol(obs: pd.DataFrame, xy: np.ndarray) -> np.ndarray:
    """Array coordinates from the table, else from legacy ST `<x>x<y>` spot names, else a grid of the centres."""
    if {"array_row", "array_col"} <= set(obs.columns):
        return obs[["array_row", "array_col"]].to_numpy()
    names = obs.index.to_series().str.extract(_ST_SPOT_NAME).astype(float)
    if not names.isna().to_numpy().any():
        return np.round(names[["y", "x"]].to_numpy()).astype(np.int64)
    scaled = (xy - xy.min(axis=0)) / spot_spacing(xy)
    return np.round(scaled[:, ::-1]).astype(np.int64)


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

    xy = np.asarray(xy, dtype=np.float64)
    not_finite = ~np.isfinite(xy).all(axis=1)
    if not_finite.any():
        raise InputDataError(
            f"Section {section_id}: {int(not_finite.sum())} of {len(xy)} spot centres are not numbers (e.g. spot "
            f"'{spot_ids[int(np.flatnonzero(not_finite)[0])]}'). Fix or remove those rows of the spot position table."
        )
    size = image_size(image)
    check_spots_inside(xy, size, section_id, image)
    matrix = sp.csr_matrix(counts, dtype=np.float32)
    adata = ad.AnnData(X=matrix)
    adata.obs_names = [str(s) for s in spot_ids]
    adata.var_names = [str(g) for g in genes]
    if not adata.var_names.is_unique:
        adata.var_names_make_unique()
    adata.obs[Obs.ARRAY_ROW] = np.asarray(array_rowcol[:, 0], dtype=np.int64)
    adata.obs[Obs.ARRAY_COL] = np.asarray(array_rowcol[:, 1], dtype=np.int64)
    adata.obsm[Obsm.SPATIAL] = np.asarray(xy, dtype=np.float64)
    adata.uns.update(
        {
            Uns.SECTION_ID: section_id,
            Uns.PLATFORM: platform,
            Uns.IMAGE_PATH: str(Path(image).resolve()),
            Uns.IMAGE_SIZE: [int(size[0]), int(size[1])],
            Uns.MICRONS_PER_PIXEL: float(microns_per_pixel),
            Uns.SPOT_DIAMETER_PX: float(spot_diameter_px),
            Uns.SPOT_SPACING_PX: spot_spacing(adata.obsm[Obsm.SPATIAL]),
        }
    )
    return adata
