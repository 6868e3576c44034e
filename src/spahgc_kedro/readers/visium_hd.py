"""10x Visium HD Space Ranger (3.0+) binned output, one section per subfolder of `raw_dir`.

    <raw_dir>/<section>/[outs/]binned_outputs/square_<NNN>um/filtered_feature_bc_matrix.h5  (or the mtx folder)
    <raw_dir>/<section>/[outs/]binned_outputs/square_<NNN>um/spatial/tissue_positions.parquet
    <raw_dir>/<section>/[outs/]binned_outputs/square_<NNN>um/spatial/scalefactors_json.json
    <raw_dir>/<section>/<full-resolution image>.tif|.btf|...  (or listed in <raw_dir>/images.csv)

The bins of one size (`bin_um`: 16 by default, or 8 or 2; Space Ranger's `square_016um`
folder) are the section's spots, at their true spacing: a bin is as wide as the distance
between bin centres, so `spatial_radius_spacings` counts bins and the scale comes from
the scale factors' `microns_per_pixel` (else bin size over `spot_diameter_fullres`).
"""

from __future__ import annotations

from pathlib import Path

from spahgc_kedro.hints import AnnData

from .common import InputDataError, require_file
from .visium import _image, _outs, assemble_visium, read_counts, read_scale_factors, read_tissue_positions

VISIUM_HD_LAYOUT = (
    "<raw_dir>/<section>/ holding Space Ranger's outs/ (or its content) with binned_outputs/square_<NNN>um/ "
    "(filtered_feature_bc_matrix.h5 or filtered_feature_bc_matrix/, spatial/tissue_positions.parquet, "
    "spatial/scalefactors_json.json); plus the full-resolution H&E image file in <raw_dir>/<section>/ "
    "(or listed in <raw_dir>/images.csv)"
)


def bin_folder_name(bin_um: int) -> str:
    """Space Ranger's folder name of a bin size: 16 -> square_016um."""
    return f"square_{int(bin_um):03d}um"


def discover_sections(raw_dir: str | Path) -> list[str]:
    """Subfolders of `raw_dir` that hold Space Ranger's binned outputs."""
    raw_dir = Path(raw_dir)
    candidates = sorted(p for p in raw_dir.iterdir() if p.is_dir()) if raw_dir.is_dir() else []
    found = [p.name for p in candidates if (p / "binned_outputs").is_dir() or (p / "outs" / "binned_outputs").is_dir()]
    if not found:
        raise InputDataError(f"No Visium HD sections found in '{raw_dir}'. Expected layout: {VISIUM_HD_LAYOUT}")
    return found


def read_section(raw_dir: str | Path, section_id: str, bin_um: int = 16) -> AnnData:
    """Read one Visium HD section's bins of `bin_um` microns into the standard AnnData."""
    raw_dir = Path(raw_dir)
    binned = _outs(raw_dir, section_id) / "binned_outputs"
    folder = binned / bin_folder_name(bin_um)
    if not folder.is_dir():
        present = sorted(p.name for p in binned.iterdir() if p.is_dir()) if binned.is_dir() else []
        raise InputDataError(
            f"Section {section_id} has no {bin_um} um bins: '{folder}' does not exist (found: "
            f"{', '.join(present) or 'nothing'}). Choose a bin size it has with --params "
            "datasets.<name>.reader_options.bin_um:<8|16|...>."
        )
    counts, genes, barcodes, counts_source = read_counts(folder, section_id, VISIUM_HD_LAYOUT)
    spatial = folder / "spatial"
    positions = require_file(spatial / "tissue_positions.parquet", f"bin positions of {section_id}", VISIUM_HD_LAYOUT)
    scale = read_scale_factors(spatial, section_id, VISIUM_HD_LAYOUT)
    return assemble_visium(
        counts,
        genes,
        barcodes,
        read_tissue_positions(positions),
        section_id=section_id,
        image=_image(raw_dir, section_id),
        counts_source=counts_source,
        spot_diameter_px=float(scale["spot_diameter_fullres"]),
        spot_diameter_um=float(bin_um),
        spacing_um=float(bin_um),
        platform="visium_hd",
        microns_per_pixel=scale.get("microns_per_pixel"),
    )
