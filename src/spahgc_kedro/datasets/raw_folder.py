"""A dataset's native raw folder, as a catalog entry so kedro-viz shows where data starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError


class RawFolderDataset(AbstractDataset[None, str]):
    """Loads the absolute path of a raw-data folder; readers parse the native layout inside.

    A folder that does not exist loads too: the ingestion node, which knows the dataset preset,
    says where its data comes from.
    """

    def __init__(self, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def _load(self) -> str:
        return str(self._path.resolve())

    def _save(self, data: None) -> None:
        raise DatasetError("Raw folders are read-only: the project never writes raw data.")

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
