"""Registers the project's pipelines; `__default__` runs them all in order."""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

STAGES = ("ingestion", "embedding", "graph", "train", "evaluation", "interpretation")


def register_pipelines() -> dict[str, Pipeline]:
    """Return every pipeline found under `pipelines/`, each in its own namespace, plus `__default__`."""
    # The namespace groups a stage's nodes (one box per stage in kedro-viz, `--namespaces` on the CLI);
    # dataset names stay unprefixed because the stages share one catalog.
    pipelines = {
        name: Pipeline(stage, namespace=name, prefix_datasets_with_namespace=False)
        for name, stage in find_pipelines(raise_errors=True).items()
    }
    pipelines["__default__"] = sum((pipelines[name] for name in STAGES if name in pipelines), Pipeline([]))
    return pipelines
