"""Kedro datasets that kedro-datasets lacks: h5ad, raw folders, HeteroData, torch checkpoints, caches, SpatialData."""

from .anndata_dataset import AnnDataDataset
from .cache_folder import CacheFolderDataset
from .raw_folder import RawFolderDataset
from .spatialdata_dataset import SpatialDataDataset
from .torch_datasets import HeteroDataDataset, TorchObjectDataset

__all__ = [
    "AnnDataDataset",
    "CacheFolderDataset",
    "RawFolderDataset",
    "SpatialDataDataset",
    "HeteroDataDataset",
    "TorchObjectDataset",
]
