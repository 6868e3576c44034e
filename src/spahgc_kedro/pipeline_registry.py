"""Registers the project's pipelines; `__default__` runs them all in order."""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

STAGES = ("ingestion", "embedding", "graph", "train", "evaluation", "interpretation")


def register_pipelines() -> dict[str, Pipeline]:
    """Return every pipeline found under `pipelines/`, plus `__default__`."""
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum((pipelines[name] for name in STAGES if name in pipelines), Pipeline([]))
    return pipelines
