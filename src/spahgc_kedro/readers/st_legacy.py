"""Legacy Spatial Transcriptomics (100 um spots): the her2st repository and cSCC GEO layouts.

her2st (github.com/almaan/her2st), under `raw_dir` or `raw_dir/data`:
    ST-cnts/<section>.tsv.gz              spots x genes, row names `<x>x<y>`
    ST-spotfiles/<section>_selection.tsv  x y new_x new_y pixel_x pixel_y selected
    ST-imgs/<patient letter>/<section>/<any>.jpg
cSCC (GEO GSE144240), flat folder:
    GSM..._<P>_ST_<rep>_stdata.tsv.gz, GSM..._spot_data-selection-<P>_ST_<rep>.tsv.gz,
    GSM..._<P>_ST_<rep>.jpg
Counts join spots on `round(x)` x `round(y)` of the spot table.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from spahgc_kedro.hints import AnnData
from spahgc_kedro.schema import Uns

from ..images import IMAGE_SUFFIXES, is_image
from .common import (
    InputDataError,
    build_section,
    check_unique,
    flag_set,
    intersect_spots,
    numeric_counts,
    read_table,
    require_file,
)

HER2ST_LAYOUT = (
    "ST-cnts/<section>.tsv.gz, ST-spotfiles/<section>_selection.tsv and "
    "ST-imgs/<patient>/<section>/<image>.jpg (the her2st repository's data/ folder)"
)
CSCC_LAYOUT = (
    "GSM*_<patient>_ST_<rep>_stdata.tsv.gz, GSM*_spot_data-selection-<patient>_ST_<rep>.tsv.gz "
    "and GSM*_<patient>_ST_<rep>.jpg in one folder (GEO GSE144240)"
)
ST_SPOT_PITCH_UM = 200.0
ST_SPOT_DIAMETER_UM = 100.0
_CSCC_COUNTS = re.compile(r"_(P\d+_ST_rep\d+)_stdata\.tsv(\.gz)?$")


def _her2st_root(raw_dir: Path) -> Path | None:
    for root in (raw_dir, raw_dir / "data"):
        if (root / "ST-cnts").is_dir():
            return root
    return None


def discover_sections(raw_dir: str | Path) -> list[str]:
    """Section ids in a her2st-layout or cSCC-layout folder."""
    raw_dir = Path(raw_dir)
    root = _her2st_root(raw_dir)
    if root is not None:
        return sorted(p.name.split(".")[0] for p in (root / "ST-cnts").glob("*.tsv*"))
    found = sorted(m.group(1) for p in raw_dir.glob("*stdata.tsv*") if (m := _CSCC_COUNTS.search(p.name)))
    if not found:
        raise InputDataError(
            f"No legacy ST sections found in '{raw_dir}'. Expected either {HER2ST_LAYOUT}, or {CSCC_LAYOUT}."
        )
    return found


def _her2st_files(root: Path, section_id: str) -> tuple[Path, Path, Path]:
    counts = require_file(root / "ST-cnts" / f"{section_id}.tsv.gz", f"count table of {section_id}", HER2ST_LAYOUT)
    spots = require_file(
        root / "ST-spotfiles" / f"{section_id}_selection.tsv", f"spot table of {section_id}", HER2ST_LAYOUT
    )
    image_dir = require_file(
        root / "ST-imgs" / section_id[0] / section_id, f"image folder of {section_id}", HER2ST_LAYOUT
    )
    images = sorted(p for p in image_dir.iterdir() if is_image(p))
    if not images:
        raise InputDataError(f"No .jpg image in '{image_dir}'. Expected layout: {HER2ST_LAYOUT}")
    return counts, spots, images[0]


def _one(raw_dir: Path, pattern: str, what: str) -> Path:
    hits = sorted(raw_dir.glob(pattern))
    if not hits:
        raise InputDataError(f"Missing {what}: no file matches '{raw_dir / pattern}'. Expected layout: {CSCC_LAYOUT}")
    return hits[0]


def _cscc_files(raw_dir: Path, section_id: str) -> tuple[Path, Path, Path]:
    counts = _one(raw_dir, f"*_{section_id}_stdata.tsv*", f"count table of {section_id}")
    spots = _one(raw_dir, f"*spot_data-selection-{section_id}.tsv*", f"spot table of {section_id}")
    image = next((p for s in IMAGE_SUFFIXES for p in sorted(raw_dir.glob(f"*_{section_id}{s}"))), None)
    if image is None:
        packed = sorted(raw_dir.glob(f"*_{section_id}.jpg.gz"))
        hint = f" Found '{packed[0].name}': decompress it with gunzip." if packed else ""
        raise InputDataError(f"Missing image of {section_id} in '{raw_dir}'.{hint} Expected layout: {CSCC_LAYOUT}")
    return counts, spots, image


def read_section(raw_dir: str | Path, section_id: str) -> AnnData:
    """Read one legacy ST section into the standard AnnData."""
    raw_dir = Path(raw_dir)
    root = _her2st_root(raw_dir)
    counts_path, spots_path, image = (
        _her2st_files(root, section_id) if root is not None else _cscc_files(raw_dir, section_id)
    )
    counts = read_table(counts_path, sep="\t", index_col=0, keep_default_na=False)
    counts.index = counts.index.astype(str)
    check_unique(counts.index, "spot ids", counts_path)
    counts = numeric_counts(counts, counts_path)

    spots = read_table(spots_path, sep="\t")
    missing = {"x", "y", "pixel_x", "pixel_y"} - set(spots.columns)
    if missing:
        raise InputDataError(
            f"Spot table '{spots_path}' lacks columns {sorted(missing)}; expected x y pixel_x pixel_y."
        )
    if "selected" in spots.columns:
        spots = spots[flag_set(spots["selected"])]
    spots.index = pd.Index([f"{int(round(x))}x{int(round(y))}" for x, y in zip(spots["x"], spots["y"], strict=True)])
    check_unique(spots.index, "spot positions (x, y)", spots_path)

    keep = intersect_spots(counts.index, spots.index, section_id)
    counts, spots = counts.loc[keep], spots.loc[keep]
    xy = spots[["pixel_x", "pixel_y"]].to_numpy(dtype=np.float64)
    # legacy ST arrays: x is the column, y the row
    array_rowcol = np.stack([spots["y"].round().astype(int), spots["x"].round().astype(int)], axis=1)
    adata = build_section(
        counts.to_numpy(),
        list(counts.columns),
        list(keep),
        xy,
        array_rowcol,
        section_id=section_id,
        platform="legacy_st",
        image=image,
    )
    # Legacy ST arrays place 100 um spots 200 um apart: the spacing gives the scale.
    microns_per_pixel = ST_SPOT_PITCH_UM / adata.uns[Uns.SPOT_SPACING_PX]
    adata.uns[Uns.MICRONS_PER_PIXEL] = microns_per_pixel
    adata.uns[Uns.SPOT_DIAMETER_PX] = ST_SPOT_DIAMETER_UM / microns_per_pixel
    return adata
