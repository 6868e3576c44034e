"""10x Visium Space Ranger output, one section per subfolder of `raw_dir`.

    <raw_dir>/<section>/[outs/]filtered_feature_bc_matrix.h5   (or the filtered_feature_bc_matrix/ mtx folder)
    <raw_dir>/<section>/[outs/]spatial/tissue_positions_list.csv (Space Ranger < 2.0, no header)
                                  or spatial/tissue_positions.csv (>= 2.0, header) or .parquet
    <raw_dir>/<section>/[outs/]spatial/scalefactors_json.json
    <raw_dir>/<section>/<full-resolution image>.tif|.tiff|.btf|.jpg|.png  (not part of outs/)
    or <raw_dir>/images.csv with columns `section,image` (paths absolute or relative to raw_dir)
`pxl_row_in_fullres` is the image's y and `pxl_col_in_fullres` its x.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from spahgc_kedro.hints import AnnData
from spahgc_kedro.schema import Uns

from ..images import is_image
from .common import InputDataError, build_section, check_unique, intersect_spots, read_table, require_file

VISIUM_LAYOUT = (
    "<raw_dir>/<section>/ holding Space Ranger's outs/ (or its content): filtered_feature_bc_matrix.h5 "
    "or filtered_feature_bc_matrix/, spatial/tissue_positions[_list].csv, spatial/scalefactors_json.json; "
    "plus the full-resolution H&E image file in <raw_dir>/<section>/ (or listed in <raw_dir>/images.csv)"
)
VISIUM_SPOT_DIAMETER_UM = 55.0
VISIUM_SPACING_UM = 100.0
POSITION_COLUMNS = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]


def read_mtx_folder(folder: Path, layout: str) -> tuple[object, list[str], list[str]]:
    """(spots x genes CSR counts, gene symbols, barcodes) from a 10x matrix.mtx folder."""
    import scipy.io
    import scipy.sparse as sp

    def find(stem: str) -> Path:
        for name in (stem, f"{stem}.gz"):
            if (folder / name).exists():
                return folder / name
        if stem == "features.tsv" and (folder / "genes.tsv").exists():
            return folder / "genes.tsv"
        return require_file(folder / stem, f"10x {stem} (or {stem}.gz)", layout)

    matrix_path, features_path, barcodes_path = find("matrix.mtx"), find("features.tsv"), find("barcodes.tsv")
    features = read_table(features_path, sep="\t", header=None, dtype=str)
    barcodes = read_table(barcodes_path, sep="\t", header=None, dtype=str)[0].tolist()
    try:
        counts = sp.csr_matrix(scipy.io.mmread(matrix_path)).T.tocsr()
    except ValueError as err:
        raise InputDataError(f"Cannot read the Matrix Market file '{matrix_path}': {err}. Re-download it.") from err
    if counts.shape != (len(barcodes), len(features)):
        raise InputDataError(
            f"'{matrix_path}' is {counts.shape[1]} x {counts.shape[0]} (genes x spots) but '{features_path}' lists "
            f"{len(features)} genes and '{barcodes_path}' {len(barcodes)} barcodes: the files do not belong together."
        )
    # 10x features: id, symbol, type; older or hand-made files may hold symbols only.
    symbols = features[1] if features.shape[1] > 1 else features[0]
    if features.shape[1] > 2:
        gex = (features[2] == "Gene Expression").to_numpy()
        counts, symbols = counts[:, gex], symbols[gex]
    return counts, symbols.tolist(), barcodes


def read_counts(
    folder: Path, section_id: str, layout: str, name: str = "filtered_feature_bc_matrix"
) -> tuple[object, list[str], list[str], Path]:
    """(spots x genes CSR counts, gene symbols, barcodes, the file read) from `folder`'s 10x matrix `<name>.h5`,
    or its `<name>/` mtx folder (Xenium's is cell_feature_matrix)."""
    h5 = folder / f"{name}.h5"
    if h5.exists():
        import scanpy as sc
        import scipy.sparse as sp

        try:
            matrix = sc.read_10x_h5(h5)
        except (OSError, KeyError, ValueError) as err:
            raise InputDataError(f"Cannot read the 10x matrix '{h5}': {err}. Re-export or re-download it.") from err
        return sp.csr_matrix(matrix.X), list(matrix.var_names), list(matrix.obs_names), h5
    mtx = require_file(folder / name, f"count matrix of {section_id} (.h5 file or mtx folder)", layout)
    return (*read_mtx_folder(mtx, layout), mtx)


def read_scale_factors(spatial: Path, section_id: str, layout: str) -> dict:
    """Space Ranger's scalefactors_json.json of a section, checked to hold `spot_diameter_fullres`."""
    path = require_file(spatial / "scalefactors_json.json", f"scale factors of {section_id}", layout)
    scale = json.loads(path.read_text())
    if not scale.get("spot_diameter_fullres"):
        raise InputDataError(f"'{path}' lacks 'spot_diameter_fullres'; re-export it with Space Ranger.")
    return scale


def read_tissue_positions(path: Path) -> pd.DataFrame:
    """Space Ranger spot table (CSV with or without header, or Space Ranger 3+'s parquet), indexed by barcode,
    in-tissue spots only."""
    if path.suffix == ".parquet":
        try:
            table = pd.read_parquet(path)
        except (OSError, ValueError) as err:
            raise InputDataError(
                f"Cannot read the spot table '{path}': {err}. Re-export it with Space Ranger."
            ) from err
    else:
        first = read_table(path, header=None, nrows=1, dtype=str)
        # a header names the columns: none of its position cells is a number (a data row's "1.0" is not a header)
        has_header = bool(pd.to_numeric(first.iloc[0, 1:], errors="coerce").isna().all())
        table = read_table(path, header=0 if has_header else None, dtype={0: str})
    if table.shape[1] != len(POSITION_COLUMNS):
        raise InputDataError(
            f"Spot table '{path}' has {table.shape[1]} columns; expected the six Space Ranger columns "
            f"{', '.join(POSITION_COLUMNS)}."
        )
    table.columns = POSITION_COLUMNS
    numeric = table[POSITION_COLUMNS[1:]].apply(pd.to_numeric, errors="coerce")
    if numeric.isna().to_numpy().any():
        raise InputDataError(f"Spot table '{path}' has non-numeric positions; expected {', '.join(POSITION_COLUMNS)}.")
    table[POSITION_COLUMNS[1:]] = numeric
    table.index = pd.Index(table.pop("barcode").astype(str))
    check_unique(table.index, "barcodes", path)
    return table[table["in_tissue"] == 1]


def assemble_visium(
    counts: object,
    genes: list[str],
    barcodes: list[str],
    positions: pd.DataFrame,
    *,
    section_id: str,
    image: Path,
    counts_source: Path,
    spot_diameter_px: float,
    spot_diameter_um: float = VISIUM_SPOT_DIAMETER_UM,
    spacing_um: float = VISIUM_SPACING_UM,
    platform: str = "visium",
    microns_per_pixel: float | None = None,
):
    """Join counts to in-tissue positions and build the standard Visium (or Visium HD bin) section."""
    counts_ids = pd.Index(barcodes)
    check_unique(counts_ids, "barcodes", counts_source)
    keep = intersect_spots(counts_ids, positions.index, section_id)
    rows = counts_ids.get_indexer(keep)
    spots = positions.loc[keep]
    xy = spots[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(dtype=np.float64)
    adata = build_section(
        counts[rows],
        genes,
        list(keep),
        xy,
        spots[["array_row", "array_col"]].to_numpy(),
        section_id=section_id,
        platform=platform,
        image=image,
        spot_diameter_px=spot_diameter_px,
    )
    # Visium spots are 55 um wide with centres 100 um apart (HD bins: as wide as apart): either gives the scale.
    if microns_per_pixel:
        adata.uns[Uns.MICRONS_PER_PIXEL] = float(microns_per_pixel)
    elif np.isfinite(spot_diameter_px):
        adata.uns[Uns.MICRONS_PER_PIXEL] = spot_diameter_um / spot_diameter_px
    else:
        adata.uns[Uns.MICRONS_PER_PIXEL] = spacing_um / adata.uns[Uns.SPOT_SPACING_PX]
        adata.uns[Uns.SPOT_DIAMETER_PX] = spot_diameter_um / adata.uns[Uns.MICRONS_PER_PIXEL]
    return adata


def _outs(raw_dir: Path, section_id: str) -> Path:
    section_dir = require_file(raw_dir / section_id, f"folder of section {section_id}", VISIUM_LAYOUT)
    return section_dir / "outs" if (section_dir / "outs").is_dir() else section_dir


def discover_sections(raw_dir: str | Path) -> list[str]:
    """Subfolders of `raw_dir` that hold Space Ranger output."""
    raw_dir = Path(raw_dir)
    candidates = sorted(p for p in raw_dir.iterdir() if p.is_dir()) if raw_dir.is_dir() else []
    found = [p.name for p in candidates if (p / "spatial").is_dir() or (p / "outs" / "spatial").is_dir()]
    if not found:
        raise InputDataError(f"No Visium sections found in '{raw_dir}'. Expected layout: {VISIUM_LAYOUT}")
    return found


def _image(raw_dir: Path, section_id: str) -> Path:
    listing = raw_dir / "images.csv"
    if listing.exists():
        table = read_table(listing, dtype=str)
        if not {"section", "image"} <= set(table.columns):
            raise InputDataError(f"'{listing}' must have the columns section,image (one row per section).")
        rows = table.loc[table["section"] == section_id, "image"]
        if len(rows):
            path = Path(rows.iloc[0])
            path = path if path.is_absolute() else raw_dir / path
            return require_file(path, f"full-resolution image of {section_id} listed in '{listing}'", VISIUM_LAYOUT)
    section_dir = raw_dir / section_id
    images = sorted(p for p in section_dir.iterdir() if p.is_file() and is_image(p))
    if not images:
        raise InputDataError(
            f"Missing the full-resolution H&E image of section {section_id}: Space Ranger's outs/ does not "
            f"contain it. Put the image file (.tif/.tiff/.btf/.jpg/.png) in '{section_dir}/' (next to outs/), "
            f"or add a row '{section_id},<path>' to '{listing}' (columns section,image)."
        )
    if len(images) > 1:
        raise InputDataError(
            f"Several image files in '{section_dir}' ({', '.join(p.name for p in images)}): keep only the "
            f"full-resolution H&E, or name it in '{listing}' (columns section,image)."
        )
    return images[0]


def read_section(raw_dir: str | Path, section_id: str) -> AnnData:
    """Read one Space Ranger section into the standard AnnData."""
    raw_dir = Path(raw_dir)
    outs = _outs(raw_dir, section_id)
    counts, genes, barcodes, counts_source = read_counts(outs, section_id, VISIUM_LAYOUT)
    spatial = outs / "spatial"
    names = ("tissue_positions_list.csv", "tissue_positions.csv", "tissue_positions.parquet")
    positions_path = next((spatial / n for n in names if (spatial / n).exists()), None)
    if positions_path is None:
        raise InputDataError(
            f"Missing spot table of {section_id}: none of {', '.join(names)} is in '{spatial}'. "
            f"Expected layout: {VISIUM_LAYOUT}"
        )
    diameter = read_scale_factors(spatial, section_id, VISIUM_LAYOUT)["spot_diameter_fullres"]
    return assemble_visium(
        counts,
        genes,
        barcodes,
        read_tissue_positions(positions_path),
        section_id=section_id,
        image=_image(raw_dir, section_id),
        counts_source=counts_source,
        spot_diameter_px=float(diameter),
    )
