"""Kedro datasets that kedro-datasets lacks: h5ad, raw folders, HeteroData, torch checkpoints."""

from .anndata_dataset import AnnDataDataset
from .raw_folder import RawFolderDataset
from .torch_datasets import HeteroDataDataset, TorchObjectDataset

__all__ = ["AnnDataDataset", "RawFolderDataset", "HeteroDataDataset", "TorchObjectDataset"]
