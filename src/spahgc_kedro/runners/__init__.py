"""Kedro runners of this project: `kedro run --runner=spahgc_kedro.runners.DaskRunner`."""

from .dask_runner import DaskRunner

__all__ = ["DaskRunner"]
