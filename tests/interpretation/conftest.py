"""Fixtures of the interpretation tests: H&E images for the shared tiny folds (`synthetic_run`)."""

from typing import Any

import numpy as np
import pytest

from tests.helpers.partitions import as_partitions


@pytest.fixture
def sections_with_images(synthetic_run, tmp_path) -> dict[str, Any]:
    """`sections` partitions whose uns point at small JPEG H&E images."""
    import anndata as ad
    from PIL import Image

    sections = {}
    for name, section in synthetic_run["sections"].items():
        path = tmp_path / f"{name}.jpg"
        Image.fromarray(np.full((620, 640, 3), 200, dtype=np.uint8)).save(path)
        adata = ad.AnnData(X=np.zeros((len(section["spots"]), 1), dtype=np.float32))
        adata.uns.update(image_path=str(path), image_size=[640, 620], section_id=name)
        sections[name] = adata
    return as_partitions(sections)
