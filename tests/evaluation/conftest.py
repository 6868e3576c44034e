"""Fixtures of the evaluation tests."""

from typing import Any

import pytest
from synthetic_folds import make_run


@pytest.fixture(scope="session")
def synthetic_run() -> dict[str, Any]:
    """One shared tiny run (3 folds, 36 spots, 10 genes)."""
    return make_run()
