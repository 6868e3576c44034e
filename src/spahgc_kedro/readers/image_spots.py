"""New sections without expression: an H&E image plus spot centres, or a tile grid.

    <new_dir>/<section>.tif|.tiff|.svs|.jpg|.jpeg|.png   the full-resolution H&E image
    <new_dir>/<section>_spots.csv                       optional spot table, full-resolution px:
        `spot_id,x,y`, or Visium-style `barcode,...,pxl_row_in_fullres,pxl_col_in_fullres`
        (header; `in_tissue` and `array_row`/`array_col` used when present), or Space
        Ranger's header-less six-column tissue_positions_list.csv.
Without a spot table, spots are the centres of a square tile grid (`grid_spacing_px`
apart); with `tissue_only`, a tile is kept when at least `min_tissue_fraction` of its
footprint on a 1024 px thumbnail is tissue: saturated (HSV S >= 0.08) and not near-white
(V <= 0.92), which separates stained tissue from bright glass.
The section has zero genes (X is [n_spots, 0]): the expression is what gets predicted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from spahgc_kedro.hints import AnnData
from spahgc_kedro.schema import Uns

from ..images import IMAGE_SUFFIXES, image_size, is_image, read_thumbnail
from .common import InputDataError, build_section, check_unique, flag_set, read_table, spot_spacing

SPOTS_SUFFIX = "_spots.csv"
LAYOUT = (
    "<new_dir>/<section>.tif|.tiff|.svs|.jpg|.jpeg|.png (full-resolution H&E) and optionally "
    "<new_dir>/<section>_spots.csv with columns spot_id,x,y (or Visium's barcode,...,pxl_row_in_fullres,"
    "pxl_col_in_fullres) in full-resolution pixels; without it a tile grid is used"
)
THUMBNAIL_MAX_SIDE = 1024
# HSV thresholds (0-1) of a stained pixel: glass is bright and grey, H&E is saturated
MIN_SATURATION = 0.08
MAX_BRIGHTNESS = 0.92
# a spot table in Visium's layout names its spots in `barcode` or its first column, never a pixel column
PIXEL_COLUMNS = {"pxl_row_in_fullres", "pxl_col_in_fullres"}


def discover_sections(raw_dir: str | Path) -> list[str]:
    """Section ids: stems of the images and of the `<section>_spots.csv` tables in `raw_dir`."""
    raw_dir = Path(raw_dir)
    files = sorted(p for p in raw_dir.iterdir() if p.is_file()) if raw_dir.is_dir() else []
    found = {p.stem for p in files if is_image(p)}
    # a spot table without its image is reported by read_section, naming the missing file
    found |= {p.name[: -len(SPOTS_SUFFIX)] for p in files if p.name.endswith(SPOTS_SUFFIX)}
    if not found:
        raise InputDataError(f"No new sections found in '{raw_dir}'. Expected layout: {LAYOUT}")
    return sorted(found)


def section_image(raw_dir: Path, section_id: str) -> Path:
    """The section's image file, failing when it is absent or ambiguous."""
    images = sorted(p for p in raw_dir.iterdir() if p.stem == section_id and is_image(p))
    if not images:
        raise InputDataError(
            f"Missing the H&E image of new section '{section_id}': none of "
            f"{', '.join(section_id + s for s in IMAGE_SUFFIXES)} is in '{raw_dir}'. Expected layout: {LAYOUT}"
        )
    if len(images) > 1:
        raise InputDataError(
            f"Several images of new section '{section_id}' in '{raw_dir}' ({', '.join(p.name for p in images)}): "
            "keep only the full-resolution H&E."
        )
    return images[0]


def _grid_coordinates(xy: np.ndarray) -> np.ndarray:
    """Integer (row, col) of spot centres on their median spacing, for tables that lack them."""
    spacing = spot_spacing(xy)
    step = spacing if np.isfinite(spacing) and spacing > 0 else 1.0
    cols, rows = np.rint((xy - xy.min(axis=0)) / step).T
    return np.stack([rows, cols], axis=1).astype(np.int64)


def read_spot_table(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(spot ids, `[n, 2]` centres (x, y), `[n, 2]` array (row, col)) from a spot CSV."""
    from .visium import read_tissue_positions

    table = read_table(path, dtype={0: str})
    columns = set(table.columns)
    if {"spot_id", "x", "y"} <= columns:
        table.index = pd.Index(table.pop("spot_id").astype(str))
        xy_columns = ["x", "y"]
    elif PIXEL_COLUMNS <= columns and ("barcode" in columns or table.columns[0] not in PIXEL_COLUMNS):
        id_column = "barcode" if "barcode" in columns else table.columns[0]
        table.index = pd.Index(table.pop(id_column).astype(str))
        if "in_tissue" in table.columns:
            table = table[flag_set(table["in_tissue"])]
        xy_columns = ["pxl_col_in_fullres", "pxl_row_in_fullres"]
    elif table.shape[1] == 6:
        table = read_tissue_positions(path)
        xy_columns = ["pxl_col_in_fullres", "pxl_row_in_fullres"]
    else:
        raise InputDataError(
            f"Spot table '{path}' has columns {list(table.columns)}; expected spot_id,x,y or Visium's "
            "barcode,...,pxl_row_in_fullres,pxl_col_in_fullres (full-resolution pixels)."
        )
    check_unique(table.index, "spot ids", path)
    xy = table[xy_columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    if not len(xy) or not np.isfinite(xy).all():
        raise InputDataError(f"Spot table '{path}' has no spots or non-numeric coordinates in {xy_columns}.")
    if {"array_row", "array_col"} <= set(table.columns):
        array_rowcol = table[["array_row", "array_col"]].to_numpy(dtype=np.int64)
    else:
        array_rowcol = _grid_coordinates(xy)
    return list(table.index), xy, array_rowcol


def tissue_mask(thumbnail: np.ndarray) -> np.ndarray:
    """Boolean mask of stained pixels: saturated enough and darker than glass."""
    from PIL import Image

    hsv = np.asarray(Image.fromarray(thumbnail).convert("HSV"), dtype=np.float32) / 255.0
    return (hsv[..., 1] >= MIN_SATURATION) & (hsv[..., 2] <= MAX_BRIGHTNESS)


def tile_fraction(
    mask: np.ndarray, rows: np.ndarray, cols: np.ndarray, spacing_px: float, size: tuple[int, int]
) -> np.ndarray:
    """Share of each tile's footprint that the thumbnail mask marks as tissue."""
    # a summed-area table gives every tile's count in O(1), whatever the number of tiles
    table = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    bounds = []
    for index, extent, full in ((rows, mask.shape[0], size[1]), (cols, mask.shape[1], size[0])):
        start = np.minimum(np.floor(index * spacing_px * extent / full).astype(int), extent - 1)
        stop = np.clip(np.floor((index + 1) * spacing_px * extent / full).astype(int), start + 1, extent)
        bounds.append((start, stop))
    (y0, y1), (x0, x1) = bounds
    inside = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]
    return inside / ((y1 - y0) * (x1 - x0))


def tile_grid(
    image: Path,
    spacing_px: float,
    tissue_only: bool,
    min_tissue_fraction: float = 0.5,
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(tile ids `r<row>_c<col>`, centres, (row, col)) of a square grid over the image."""

    if not spacing_px or spacing_px <= 0:
        raise InputDataError(f"predict.grid_spacing_px must be a positive number of pixels, got {spacing_px!r}.")
    width, height = image_size(image)
    # true division: floor division of floats drops a tile that fits exactly (501 px / 100.2 px gives 4)
    cols = np.arange(int(width / spacing_px))
    rows = np.arange(int(height / spacing_px))
    if not len(cols) or not len(rows):
        raise InputDataError(
            f"Image '{image}' ({width} x {height} px) is smaller than one {spacing_px} px tile: "
            "lower predict.grid_spacing_px."
        )
    grid_rows, grid_cols = (a.ravel() for a in np.meshgrid(rows, cols, indexing="ij"))
    xy = np.stack([(grid_cols + 0.5) * spacing_px, (grid_rows + 0.5) * spacing_px], axis=1)
    if tissue_only:
        thumbnail, _ = read_thumbnail(image, THUMBNAIL_MAX_SIDE)
        mask = tissue_mask(thumbnail)
        fraction = tile_fraction(mask, grid_rows, grid_cols, spacing_px, (width, height))
        keep = fraction >= min_tissue_fraction
        if not keep.any():
            raise InputDataError(
                f"No tile of '{image}' is at least {min_tissue_fraction:g} tissue (HSV saturation >= "
                f"{MIN_SATURATION}, brightness <= {MAX_BRIGHTNESS}): check the image, or set "
                "predict.tissue_only:false or a lower predict.min_tissue_fraction."
            )
        grid_rows, grid_cols, xy = grid_rows[keep], grid_cols[keep], xy[keep]
    ids = [f"r{r}_c{c}" for r, c in zip(grid_rows, grid_cols, strict=True)]
    return ids, xy, np.stack([grid_rows, grid_cols], axis=1)


def read_section(
    raw_dir: str | Path,
    section_id: str,
    *,
    grid_spacing_px: float = 224.0,
    tissue_only: bool = True,
    min_tissue_fraction: float = 0.5,
    microns_per_pixel: float | None = None,
) -> AnnData:
    """Read one new section (image + spot table or tile grid) into the standard AnnData with zero genes."""
    raw_dir = Path(raw_dir)
    image = section_image(raw_dir, section_id)
    spots = raw_dir / f"{section_id}{SPOTS_SUFFIX}"
    if spots.exists():
        spot_ids, xy, array_rowcol = read_spot_table(spots)
    else:
        spot_ids, xy, array_rowcol = tile_grid(
            image, float(grid_spacing_px), bool(tissue_only), float(min_tissue_fraction)
        )
    adata = build_section(
        np.zeros((len(spot_ids), 0), dtype=np.float32),
        [],
        spot_ids,
        xy,
        array_rowcol,
        section_id=section_id,
        platform="image_only",
        image=image,
        microns_per_pixel=float("nan") if microns_per_pixel is None else float(microns_per_pixel),
    )
    adata.uns[Uns.SPOT_SOURCE] = spots.name if spots.exists() else f"tile grid, {float(grid_spacing_px):g} px"
    return adata
