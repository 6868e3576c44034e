"""Torch-serialised objects: PyG HeteroData graphs and model checkpoints."""

from __future__ import annotations

from typing import Any

from ._base import FileDataset


class HeteroDataDataset(FileDataset):
    """A `torch_geometric.data.HeteroData`, saved as its `to_dict()` (tensors and plain values)."""

    def _read(self, path: str) -> Any:
        import torch
        from torch_geometric.data import HeteroData

        return HeteroData.from_dict(torch.load(path, map_location="cpu", weights_only=True))

    def _write(self, data: Any, path: str) -> None:
        import torch

        torch.save(data.to_dict(), path)


class TorchObjectDataset(FileDataset):
    """A dict of tensors and plain values (state dicts, configs) saved with `torch.save`."""

    def _read(self, path: str) -> Any:
        import torch

        return torch.load(path, map_location="cpu", weights_only=True)

    def _write(self, data: Any, path: str) -> None:
        import torch

        torch.save(data, path)
