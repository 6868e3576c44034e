"""10x Xenium output as pseudo-spots, one section per subfolder of `raw_dir`.

    <raw_dir>/<section>/cells.parquet (or cells.csv.gz)      cell_id, x_centroid, y_centroid (microns)
    <raw_dir>/<section>/cell_feature_matrix.h5 (or the cell_feature_matrix/ mtx folder)
    <raw_dir>/<section>/<H&E image>.ome.tif|.tif|...        the post-Xenium H&E (not morphology*.ome.tif)
    <raw_dir>/<section>/*he_imagealignment.csv              Xenium Explorer's 3x3 H&E -> Xenium-pixel affine

Xenium measures cells, not spots. Cells are pooled into pseudo-spots: a square grid of
`spot_um` wide bins that tiles the section (`grid: square`), or a hexagonal grid with
centres `spot_um` apart, each cell going to the nearest centre (`grid: hex`); the default
55 um is a Visium spot. A pseudo-spot's counts are the sum of its cells' counts, its
centre the grid point (mapped into H&E pixels through the alignment), and pseudo-spots
with fewer than `min_cells` cells are dropped. Without an alignment file, give the
matrix as `alignment: [[a, b, c], [d, e, f], [0, 0, 1]]` (H&E pixel -> Xenium pixel).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from spahgc_kedro.hints import AnnData

from ..images import is_image
from .common import InputDataError, build_section, check_unique, read_table, require_file
from .visium import read_counts

XENIUM_LAYOUT = (
    "<raw_dir>/<section>/ holding Xenium's cells.parquet (or cells.csv.gz), cell_feature_matrix.h5 (or "
    "cell_feature_matrix/), the H&E image file and the *he_imagealignment.csv from Xenium Explorer"
)
# Xenium's morphology image pixel, in which the alignment matrix is expressed
XENIUM_PIXEL_UM = 0.2125
GRIDS = ("square", "hex")


def discover_sections(raw_dir: str | Path) -> list[str]:
    """Subfolders of `raw_dir` that hold a Xenium cell table."""
    raw_dir = Path(raw_dir)
    candidates = sorted(p for p in raw_dir.iterdir() if p.is_dir()) if raw_dir.is_dir() else []
    found = [p.name for p in candidates if (p / "cells.parquet").exists() or (p / "cells.csv.gz").exists()]
    if not found:
        raise InputDataError(f"No Xenium sections found in '{raw_dir}'. Expected layout: {XENIUM_LAYOUT}")
    return found


def read_cells(folder: Path) -> pd.DataFrame:
    """Cell centroids in microns, indexed by cell id."""
    path = folder / "cells.parquet"
    if path.exists():
        try:
            table = pd.read_parquet(path)
        except (OSError, ValueError) as err:
            raise InputDataError(f"Cannot read the cell table '{path}': {err}. Re-export it.") from err
    else:
        path = require_file(folder / "cells.csv.gz", "Xenium cell table", XENIUM_LAYOUT)
        table = read_table(path)
    missing = {"cell_id", "x_centroid", "y_centroid"} - set(table.columns)
    if missing:
        raise InputDataError(f"The cell table '{path}' lacks the columns {sorted(missing)}.")
    table.index = pd.Index(table["cell_id"].astype(str))
    check_unique(table.index, "cell ids", path)
    return table[["x_centroid", "y_centroid"]].astype(np.float64)


def read_alignment(folder: Path, alignment: list[list[float]] | None) -> np.ndarray:
    """The 3x3 affine from H&E pixels to Xenium pixels: the given one, else the folder's alignment CSV."""
    if alignment is not None:
        matrix = np.asarray(alignment, dtype=np.float64)
        source = "reader_options.alignment"
    else:
        files = sorted(folder.glob("*imagealignment.csv"))
        if len(files) != 1:
            raise InputDataError(
                f"{'No' if not files else 'Several'} H&E alignment file (*he_imagealignment.csv) in '{folder}': "
                "export it from Xenium Explorer (Image Alignment), or give the 3x3 H&E-pixel -> Xenium-pixel matrix "
                # --params splits on commas, so a matrix can only be given in a parameters file
                "in conf/local/parameters.yml as datasets: {<name>: {reader_options: {alignment: "
                "[[a, b, c], [d, e, f], [0, 0, 1]]}}}."
            )
        source = str(files[0])
        try:
            matrix = read_table(files[0], header=None).to_numpy(dtype=np.float64)
        except ValueError as err:
            raise InputDataError(
                f"The H&E alignment file '{source}' holds values that are not numbers ({err}): it must be the 3x3 "
                "matrix Xenium Explorer exports, without a header."
            ) from err
    if matrix.shape != (3, 3) or not np.isfinite(matrix).all() or abs(np.linalg.det(matrix[:2, :2])) < 1e-12:
        raise InputDataError(f"The H&E alignment in {source} is not an invertible 3x3 affine matrix.")
    return matrix


def _image(folder: Path) -> Path:
    images = sorted(p for p in folder.iterdir() if p.is_file() and is_image(p) and "morphology" not in p.name)
    if len(images) > 1:
        named = [p for p in images if "he_image" in p.name.lower() or "_he" in p.stem.lower()]
        images = named or images
    if len(images) != 1:
        raise InputDataError(
            f"Expected one H&E image in '{folder}', found {', '.join(p.name for p in images) or 'none'}: keep the "
            "post-Xenium H&E (morphology*.ome.tif files are ignored)."
        )
    return images[0]


def pseudo_spot_grid(xy_um: np.ndarray, spot_um: float, grid: str) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's pseudo-spot (row, col) on the grid and the grid points' centres in microns, per cell."""
    if grid == "square":
        rowcol = np.floor(xy_um[:, ::-1] / spot_um).astype(np.int64)
        centres = (rowcol[:, ::-1] + 0.5) * spot_um
        return rowcol, centres
    # hex: rows spot_um * sqrt(3)/2 apart, odd rows shifted by half a spacing; nearest of the candidate centres
    height = spot_um * np.sqrt(3) / 2
    row0 = np.floor(xy_um[:, 1] / height).astype(np.int64)
    best_rowcol, best_centre = None, None
    best_distance = np.full(len(xy_um), np.inf)
    for row in (row0 - 1, row0, row0 + 1, row0 + 2):
        shift = (row % 2) * spot_um / 2
        col0 = np.floor((xy_um[:, 0] - shift) / spot_um).astype(np.int64)
        for col in (col0, col0 + 1):
            centre = np.stack([col * spot_um + shift, row * height], axis=1)
            distance = np.linalg.norm(xy_um - centre, axis=1)
            closer = distance < best_distance
            if best_rowcol is None:
                best_rowcol, best_centre = np.stack([row, col], axis=1), centre.copy()
            best_rowcol[closer] = np.stack([row, col], axis=1)[closer]
            best_centre[closer] = centre[closer]
            best_distance[closer] = distance[closer]
    return best_rowcol, best_centre


def read_section(
    raw_dir: str | Path,
    section_id: str,
    spot_um: float = 55.0,
    grid: str = "square",
    min_cells: int = 1,
    alignment: list[list[float]] | None = None,
) -> AnnData:
    """Read one Xenium section as pseudo-spots of `spot_um` microns into the standard AnnData."""
    import scipy.sparse as sp

    if grid not in GRIDS or spot_um <= 0 or min_cells < 1:
        raise InputDataError(
            f"Xenium pseudo-spots need reader_options grid in {GRIDS}, spot_um > 0 and min_cells >= 1 "
            f"(got grid={grid!r}, spot_um={spot_um}, min_cells={min_cells})."
        )
    folder = require_file(Path(raw_dir) / section_id, f"folder of section {section_id}", XENIUM_LAYOUT)
    cells = read_cells(folder)
    counts, genes, cell_ids, _ = read_counts(folder, section_id, XENIUM_LAYOUT, name="cell_feature_matrix")
    ids = pd.Index(cell_ids)
    keep = ids.intersection(cells.index, sort=False)
    if not len(keep):
        raise InputDataError(f"Section {section_id}: no cell id of the cell matrix is in the cell table.")
    counts = counts[ids.get_indexer(keep)]
    xy_um = cells.loc[keep].to_numpy()
    rowcol, centres = pseudo_spot_grid(xy_um, float(spot_um), grid)
    spots, member = np.unique(rowcol, axis=0, return_inverse=True)
    member = member.ravel()
    pooling = sp.csr_matrix((np.ones(len(member)), (member, np.arange(len(member)))), shape=(len(spots), len(member)))
    n_cells = np.asarray(pooling.sum(axis=1)).ravel()
    spot_counts = pooling @ counts
    spot_centres = np.zeros((len(spots), 2))
    spot_centres[member] = centres
    enough = n_cells >= min_cells
    he_to_xenium = read_alignment(folder, alignment)
    xenium_px = np.c_[spot_centres[enough] / XENIUM_PIXEL_UM, np.ones(int(enough.sum()))]
    xy_px = (xenium_px @ np.linalg.inv(he_to_xenium).T)[:, :2]
    # the affine's area scale: Xenium pixels per H&E pixel
    he_pixel_um = XENIUM_PIXEL_UM * np.sqrt(abs(np.linalg.det(he_to_xenium[:2, :2])))
    adata = build_section(
        spot_counts[enough],
        genes,
        [f"{section_id}_{r}_{c}" for r, c in spots[enough]],
        xy_px,
        spots[enough],
        section_id=section_id,
        platform="xenium",
        image=_image(folder),
        microns_per_pixel=he_pixel_um,
        spot_diameter_px=float(spot_um) / he_pixel_um,
    )
    adata.obs["n_cells"] = n_cells[enough].astype(np.int64)
    return adata
