"""Helpers for PartitionedDataset values, which load as {key: loader callable}."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any


def load_partition(value: Any | Callable[[], Any]) -> Any:
    """Return a partition's object, calling its loader when it is lazy."""
    return value() if callable(value) else value


def iter_partitions(partitions: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """Yield (key, object) in sorted key order, loading lazily one at a time."""
    for key in sorted(partitions):
        yield key, load_partition(partitions[key])
