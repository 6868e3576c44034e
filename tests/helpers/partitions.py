"""Partitioned-dataset stand-ins: what a PartitionedDataset loads, or a real one on disk."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def as_partitions(objects: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    """`{partition id: loader}`, as a PartitionedDataset loads."""
    return {key: (lambda value=value: value) for key, value in objects.items()}


def partitioned(path: Path, objects: dict | None = None, suffix: str = ".h5ad", dataset: str = "AnnDataDataset"):
    """A PartitionedDataset of the project's `dataset` under `path`, optionally filled with `objects`."""
    from kedro_datasets.partitions import PartitionedDataset

    store = PartitionedDataset(path=str(path), dataset=f"spahgc_kedro.datasets.{dataset}", filename_suffix=suffix)
    if objects:
        store.save(objects)
    return store
