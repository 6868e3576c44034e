"""SpatialData objects stored as `.zarr` stores (the optional spatialdata extra)."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any

from ._base import FileDataset


class SpatialDataDataset(FileDataset):
    """Loads and saves one SpatialData object as a local zarr store (a folder), replacing the old store only once
    the new one is complete."""

    def _read(self, path: str) -> Any:
        import spatialdata

        return spatialdata.read_zarr(path)

    def _save(self, data: Any) -> None:
        path = Path(self._local_path(self._get_save_path()))
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            with warnings.catch_warnings():
                # zarr announces a future default; the store is written the same either way
                warnings.filterwarnings("ignore", message="zarr v3 autosharding")
                data.write(partial)
            if path.exists():
                shutil.rmtree(path)
            partial.rename(path)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        self._invalidate_cache()
