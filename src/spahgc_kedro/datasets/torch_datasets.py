"""Torch-serialised objects: model checkpoints."""

from __future__ import annotations

from typing import Any

from ._base import FileDataset


class TorchObjectDataset(FileDataset):
    """A dict of tensors and plain values (state dicts, configs) saved with `torch.save`."""

    def _read(self, path: str) -> Any:
        import torch

        return torch.load(path, map_location="cpu", weights_only=True)

    def _write(self, data: Any, path: str) -> None:
        import torch

        torch.save(data, path)
