"""Fixtures of the interpretation tests: the evaluation tests' tiny folds plus H&E images."""

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# The generated folds are shared with the evaluation tests, which live in a sibling folder.
sys.path.insert(0, str(Path(__file__).parents[1] / "evaluation"))
from synthetic_folds import make_run  # noqa: E402


@pytest.fixture(scope="session")
def synthetic_run() -> dict[str, Any]:
    """Tiny folds (3 sections of 36 spots, genes G0-G9)."""
    return make_run()


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
        sections[name] = lambda a=adata: a
    return sections
