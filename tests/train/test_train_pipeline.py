"""The train pipeline with SequentialRunner on tiny generated graphs (no MLflow run active)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from spahgc_kedro.pipelines.graph.nodes import build_section_graphs, fit_target_scaling, make_fold_plan
from spahgc_kedro.pipelines.train import create_pipeline
from spahgc_kedro.pipelines.train.nodes import graphs_by_role
from tests.conftest import PROJECT_ROOT
from tests.graph.conftest import GRID, SECTIONS  # noqa: F401 - fixtures below come from there too

pytest_plugins = ["tests.graph.conftest"]


@pytest.fixture
def tiny_graphs(tiny, graph_params):
    """Folds, target scaling and section graphs of the five tiny sections."""
    sections, embeddings, manifest = tiny
    datasets = {"tiny": {"spatial_radius_spacings": 1.5, "gene_panel": {"rule": "hvg_intersection", "n_top": 10}}}
    folds = make_fold_plan(manifest, graph_params)
    scaling = fit_target_scaling(sections, manifest, folds, datasets, "tiny", graph_params)
    graphs = build_section_graphs(sections, embeddings, manifest, folds, scaling, datasets, "tiny", graph_params)
    return folds, scaling, graphs


def _train_params(**overrides):
    params = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_train.yml").read_text())["train"]
    return {**params, "epochs": 3, "hidden": 16, "heads": 2, "n_layers": 1, **overrides}


def _run(tmp_path, folds, scaling, graphs, **overrides):
    from kedro_datasets.partitions import PartitionedDataset

    from spahgc_kedro.datasets import TorchObjectDataset

    catalog = DataCatalog(
        {
            "section_graphs": MemoryDataset(graphs, copy_mode="assign"),
            "folds": MemoryDataset(folds),
            "target_scaling": MemoryDataset(scaling),
            "params:train": MemoryDataset(_train_params(**overrides)),
            "params:seed": MemoryDataset(0),
            "params:device": MemoryDataset("cpu"),
            "params:dataset": MemoryDataset("tiny"),
            "params:encoder": MemoryDataset("random"),
            "trained_models": TorchObjectDataset(filepath=str(tmp_path / "models.pt")),
            "predictions": PartitionedDataset(
                path=str(tmp_path / "predictions"), dataset="spahgc_kedro.datasets.AnnDataDataset", filename_suffix=".h5ad"
            ),
        }
    )
    SequentialRunner().run(create_pipeline(), catalog)
    predictions = {key: load() for key, load in catalog.load("predictions").items()}
    return catalog.load("trained_models"), predictions


def test_train_pipeline_trains_every_fold_and_predicts_its_test_section(tmp_path, tiny_graphs):
    folds, scaling, graphs = tiny_graphs
    trained, predictions = _run(tmp_path, folds, scaling, graphs)
    assert set(trained) == set(folds["folds"])
    for fold, model in trained.items():
        assert [row["epoch"] for row in model["history"]] == [1, 2, 3]
        assert model["best_epoch"] == 1 + int(np.nanargmax([row["val_pcc"] for row in model["history"]]))
        prediction = predictions[fold]
        test = graphs_by_role(graphs, folds, fold, "test")[0]
        assert prediction.uns["section_id"] == folds["folds"][fold]["test"][0] == test.section_id
        assert list(prediction.obs_names) == list(test.spot_ids)
        assert list(prediction.var_names) == scaling[fold]["genes"]
        assert np.isfinite(prediction.X).all()
        np.testing.assert_array_equal(prediction.layers["measured"], test["target"].y.numpy())


def test_training_is_reproducible_for_a_seed(tmp_path, tiny_graphs):
    folds, scaling, graphs = tiny_graphs
    one_fold = {**folds, "folds": {k: v for k, v in list(folds["folds"].items())[:1]}}
    first, _ = _run(tmp_path / "first", one_fold, scaling, graphs)
    second, _ = _run(tmp_path / "second", one_fold, scaling, graphs)
    fold = next(iter(one_fold["folds"]))
    assert first[fold]["history"] == second[fold]["history"]


def test_missing_graphs_say_which_pipeline_to_run(tiny_graphs):
    folds, scaling, graphs = tiny_graphs
    fold = next(iter(folds["folds"]))
    partial = {k: v for k, v in graphs.items() if not k.startswith(f"{fold}/")}
    with pytest.raises(ValueError, match="--pipeline=graph"):
        graphs_by_role(partial, folds, fold, "train")
