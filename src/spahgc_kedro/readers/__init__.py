"""Native-layout readers: each turns one section's files into a standard AnnData.

Every reader module exposes
- `discover_sections(raw_dir) -> list[str]`: section ids found in the folder;
- `read_section(raw_dir, section_id, **options) -> AnnData`: the section in the standard
  form described in docs/design.md (the caller adds `patient_id` and `dataset`); the
  options are the dataset preset's `reader_options` (e.g. Visium HD's `bin_um`).
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

# format name in the dataset presets -> reader module
READERS = {
    "st_legacy": "spahgc_kedro.readers.st_legacy",
    "alex": "spahgc_kedro.readers.alex",
    "visium": "spahgc_kedro.readers.visium",
    "visium_hd": "spahgc_kedro.readers.visium_hd",
    "hest": "spahgc_kedro.readers.hest",
    "xenium": "spahgc_kedro.readers.xenium",
    # scverse SpatialData zarr stores (optional extra)
    "spatialdata": "spahgc_kedro.readers.spatialdata_store",
    # sections without expression (prediction only): image + spot table or tile grid
    "image_spots": "spahgc_kedro.readers.image_spots",
}


def get_reader(fmt: str) -> ModuleType:
    """Return the reader module for a format name, or fail naming the known ones."""
    if fmt not in READERS:
        raise ValueError(f"Unknown data format '{fmt}'. Known formats: {', '.join(sorted(READERS))}.")
    return import_module(READERS[fmt])
