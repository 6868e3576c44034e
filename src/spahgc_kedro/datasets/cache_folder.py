"""A folder of cached partitions, loaded lazily: an empty folder is an empty cache, a damaged file a cache miss."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kedro_datasets.partitions import PartitionedDataset


class CacheFolderDataset(PartitionedDataset):
    """Like PartitionedDataset, but a missing or empty folder loads as `{}` (a first run).

    Partitions stay loaders, so the node that uses the cache decides what a damaged entry means
    (IncrementalDataset would load every file at once and fail on the first damaged one).
    """

    def load(self) -> dict[str, Callable[[], Any]]:
        """`{partition: loader}` of what the folder holds; `{}` when it holds nothing yet."""
        if not self._filesystem.exists(self._normalized_path):
            return {}
        self._invalidate_caches()
        if not self._list_partitions():
            return {}
        return super().load()
