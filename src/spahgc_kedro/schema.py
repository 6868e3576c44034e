"""Key names of the AnnData objects the pipelines hand each other (docs/design.md §1, §2, §4).

Written once here so readers, nodes and figures cannot drift apart, in squidpy's
`Key.obsm.spatial` style: `section.uns[Uns.IMAGE_PATH]`, `section.obsm[Obsm.SPATIAL]`.
"""

from __future__ import annotations

__all__ = ["Layers", "Obs", "Obsm", "Uns"]


class Obs:
    """Per-spot columns of a standard section."""

    ARRAY_ROW = "array_row"
    ARRAY_COL = "array_col"


class Obsm:
    """Per-spot matrices: spot centres `(x, y)` in full-resolution pixels (scanpy's convention)."""

    SPATIAL = "spatial"


class Layers:
    """Extra matrices of a prediction AnnData."""

    MEASURED = "measured"
    LOG_EXPRESSION = "log_expression"
    UNCERTAINTY = "uncertainty"


class Uns:
    """Unstructured keys of sections (§1), embeddings (§2) and predictions (§4)."""

    SECTION_ID = "section_id"
    PATIENT_ID = "patient_id"
    DATASET = "dataset"
    PLATFORM = "platform"
    IMAGE_PATH = "image_path"
    IMAGE_SIZE = "image_size"
    MICRONS_PER_PIXEL = "microns_per_pixel"
    SPOT_DIAMETER_PX = "spot_diameter_px"
    SPOT_SPACING_PX = "spot_spacing_px"
    SPOT_SOURCE = "spot_source"
    ENCODER = "encoder"
    FOLD = "fold"
    FOLD_SCHEME = "fold_scheme"
    TARGET_TRANSFORM = "target_transform"
    BEST_EPOCH = "best_epoch"
    MLFLOW_RUN_ID = "mlflow_run_id"
    REFERENCE_SECTIONS = "reference_sections"
