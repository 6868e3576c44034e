"""Swarbrick-lab triple-negative breast cancer Visium set ("Alex"), one folder per sample.

<raw_dir>/<sample>/filtered_count_matrix/{matrix.mtx, features.tsv, barcodes.tsv}[.gz]  (genes x spots)
<raw_dir>/<sample>/spatial/tissue_positions_list.csv  (no header: barcode, in_tissue, array_row,
    array_col, pxl_row_in_fullres, pxl_col_in_fullres; pxl_row is the image's y)
<raw_dir>/<sample>/metadata.csv                       (spot annotations; not needed here)
<raw_dir>/<sample>/image.tif                          (full-resolution H&E)
"""

from __future__ import annotations

import json
from pathlib import Path

from spahgc_kedro.hints import AnnData

from .common import InputDataError, require_file
from .visium import assemble_visium, read_mtx_folder, read_tissue_positions

ALEX_LAYOUT = (
    "<raw_dir>/<sample>/filtered_count_matrix/{matrix.mtx, features.tsv, barcodes.tsv} (optionally .gz), "
    "<sample>/spatial/tissue_positions_list.csv, <sample>/metadata.csv and <sample>/image.tif"
)


def discover_sections(raw_dir: str | Path) -> list[str]:
    """Sample folders of `raw_dir` that hold a filtered_count_matrix/."""
    raw_dir = Path(raw_dir)
    found = sorted(p.parent.name for p in raw_dir.glob("*/filtered_count_matrix") if p.is_dir())
    if not found:
        raise InputDataError(f"No Alex samples found in '{raw_dir}'. Expected layout: {ALEX_LAYOUT}")
    return found


def read_section(raw_dir: str | Path, section_id: str) -> AnnData:
    """Read one Alex sample into the standard AnnData."""
    sample = require_file(Path(raw_dir) / section_id, f"folder of sample {section_id}", ALEX_LAYOUT)
    matrix_dir = require_file(sample / "filtered_count_matrix", f"count matrix folder of {section_id}", ALEX_LAYOUT)
    positions_path = require_file(
        sample / "spatial" / "tissue_positions_list.csv", f"spot table of {section_id}", ALEX_LAYOUT
    )
    image = require_file(sample / "image.tif", f"full-resolution image of {section_id}", ALEX_LAYOUT)
    counts, genes, barcodes = read_mtx_folder(matrix_dir, ALEX_LAYOUT)
    # Some copies ship Space Ranger's scale factors; without them the 100 um spot pitch gives the scale.
    scale_path = sample / "spatial" / "scalefactors_json.json"
    diameter = json.loads(scale_path.read_text()).get("spot_diameter_fullres") if scale_path.exists() else None
    return assemble_visium(
        counts,
        genes,
        barcodes,
        read_tissue_positions(positions_path),
        section_id=section_id,
        image=image,
        counts_source=matrix_dir,
        spot_diameter_px=float(diameter) if diameter else float("nan"),
    )
