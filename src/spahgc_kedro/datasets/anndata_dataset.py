"""AnnData stored as `.h5ad`."""

from __future__ import annotations

from typing import Any

from ._base import FileDataset


class AnnDataDataset(FileDataset):
    """Loads and saves one AnnData object as an h5ad file."""

    def _read(self, path: str) -> Any:
        import anndata as ad

        return ad.read_h5ad(path)

    def _write(self, data: Any, path: str) -> None:
        data.write_h5ad(path, compression="gzip")
