"""Kedro datasets that kedro-datasets lacks: h5ad, raw folders, section graph stores, torch checkpoints, caches, SpatialData."""

from .anndata_dataset import AnnDataDataset
from .cache_folder import CacheFolderDataset
from .graph_store import SectionGraphStore
from .raw_folder import RawFolderDataset
from .spatialdata_dataset import SpatialDataDataset
from .torch_datasets import TorchObjectDataset

__all__ = [
    "AnnDataDataset",
    "CacheFolderDataset",
    "RawFolderDataset",
    "SectionGraphStore",
    "SpatialDataDataset",
    "TorchObjectDataset",
]
