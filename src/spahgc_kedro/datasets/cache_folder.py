"""A folder of cached partitions, loaded lazily: an empty folder is an empty cache, a damaged file a cache miss."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kedro_datasets.partitions import PartitionedDataset


class SectionCache(dict):
    """`{partition: loader}` of a cache folder, plus `store` to write one entry as soon as it is computed,
    so a run killed half-way keeps what it finished and the next run starts from there."""

    def __init__(self, loaders: dict[str, Callable[[], Any]], folder: CacheFolderDataset) -> None:
        super().__init__(loaders)
        self._folder = folder

    def store(self, partition: str, data: Any) -> None:
        """Write one entry (atomically, like every project dataset) and make it loadable from here."""
        self._folder.save({partition: data})
        self[partition] = lambda: data


class CacheFolderDataset(PartitionedDataset):
    """Like PartitionedDataset, but a missing or empty folder loads as an empty cache (a first run).

    Partitions stay loaders, so the node that uses the cache decides what a damaged entry means
    (IncrementalDataset would load every file at once and fail on the first damaged one).
    """

    def load(self) -> SectionCache:
        """The cache: `{partition: loader}` of what the folder holds (empty when it holds nothing yet)."""
        if not self._filesystem.exists(self._normalized_path):
            return SectionCache({}, self)
        self._invalidate_caches()
        if not self._list_partitions():
            return SectionCache({}, self)
        return SectionCache(super().load(), self)
