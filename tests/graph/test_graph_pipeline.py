"""The graph pipeline end to end with SequentialRunner, and its catalog and parameters."""

from __future__ import annotations

import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from spahgc_kedro.datasets import SectionGraphStore
from spahgc_kedro.pipelines.graph import create_pipeline
from tests.helpers.partitions import partitioned
from tests.helpers.project import project_parameters
from tests.helpers.tiny_sections import SECTIONS


@pytest.mark.parametrize("scheme", ["leave_one_section_out", "leave_one_patient_out"])
def test_graph_pipeline_runs_on_tiny_sections(tmp_path, tiny, scheme):
    from kedro_datasets.json import JSONDataset

    sections, embeddings, manifest = tiny
    params = project_parameters()["graph"]
    params["fold_scheme"] = scheme
    catalog = DataCatalog(
        {
            "sections": partitioned(tmp_path / "sections", sections),
            "patch_embeddings": partitioned(tmp_path / "embeddings", embeddings),
            "section_manifest": MemoryDataset(manifest),
            "params:graph": MemoryDataset(params),
            # The run's dataset preset overrides the manifest's: a 1-spacing radius keeps
            # only side neighbours on the grid.
            "params:datasets": MemoryDataset({"tiny": {"spatial_radius_spacings": 1.1}}),
            "params:dataset": MemoryDataset("tiny"),
            "folds": JSONDataset(filepath=str(tmp_path / "folds.json")),
            "target_scaling": JSONDataset(filepath=str(tmp_path / "target_scaling.json")),
            "section_graphs": SectionGraphStore(path=str(tmp_path / "graphs")),
        }
    )
    SequentialRunner().run(create_pipeline(), catalog)

    folds = catalog.load("folds")
    assert folds["scheme"] == scheme
    n_folds = len(SECTIONS) if scheme == "leave_one_section_out" else len({p for _, p in SECTIONS})
    assert len(folds["folds"]) == n_folds
    scaling = catalog.load("target_scaling")
    assert set(scaling) == set(folds["folds"])
    assert all(
        s["transform"] == "log10" and len(s["genes"]) == len(s["min"]) == len(s["max"]) for s in scaling.values()
    )
    graphs = catalog.load("section_graphs")
    assert len(graphs) == n_folds * len(SECTIONS)
    for name, fold in folds["folds"].items():
        for role in ("train", "validation", "test"):
            for section_id in fold[role]:
                data = graphs[f"{name}/{section_id}"]()
                assert (data.fold, data.section_id, data.role) == (name, section_id, role)
                assert data.genes == scaling[name]["genes"]
                near = data["target", "near", "target"].edge_index
                assert torch.bincount(near[1]).max() == 4
                data.validate()


def test_pipeline_reads_and_writes_what_the_catalog_holds():
    from tests.helpers.project import project_catalog

    catalog = project_catalog(dataset="her2st", encoder="uni")
    pipeline = create_pipeline()
    assert set(pipeline.all_outputs()) == {"graph_preset", "folds", "target_scaling", "section_graphs"}
    for name in ("folds", "target_scaling", "section_graphs"):
        path = catalog[name].get("filepath", catalog[name].get("path"))
        assert path.startswith("data/05_model_input/her2st/uni/"), path
        assert catalog[name]["metadata"]["kedro-viz"]["layer"] == "model_input"
    assert catalog["section_graphs"]["type"] == "spahgc_kedro.datasets.SectionGraphStore"
    assert {"sections", "patch_embeddings", "section_manifest", "params:graph"} <= set(pipeline.inputs())
