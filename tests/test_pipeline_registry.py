"""The registered pipelines: one namespace per stage (one box per stage in kedro-viz), dataset names shared."""

from __future__ import annotations

import pytest

STAGES = ("ingestion", "embedding", "graph", "train", "evaluation", "interpretation")


@pytest.fixture(scope="module")
def pipelines():
    from kedro.framework.project import configure_project

    from spahgc_kedro.pipeline_registry import register_pipelines

    configure_project("spahgc_kedro")
    return register_pipelines()


def test_every_node_sits_in_its_stages_namespace(pipelines):
    for name, stage in pipelines.items():
        if name == "__default__":
            continue
        assert {node.namespace for node in stage.nodes} == {name}, name
        assert all(node.name.startswith(f"{name}.") for node in stage.nodes), name


def test_the_default_run_is_the_six_stages_and_datasets_keep_their_catalog_names(pipelines):
    default = pipelines["__default__"]
    assert {node.namespace for node in default.nodes} == set(STAGES)
    assert "train.train_fold_group_0" in {node.name for node in default.nodes}
    # the namespace is not a dataset prefix: the stages still meet in one catalog
    assert not any("." in name for name in default.datasets() if not name.startswith("params:"))
    assert {"sections", "patch_embeddings", "section_graphs", "trained_models", "report"} <= default.datasets()
