"""The train pipeline with SequentialRunner on tiny generated graphs (no MLflow run active)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from kedro.io import DataCatalog, MemoryDataset, SharedMemoryDataCatalog
from kedro.runner import ParallelRunner, SequentialRunner

from spahgc_kedro.parallelism import members
from spahgc_kedro.pipelines.train import create_pipeline
from spahgc_kedro.pipelines.train.nodes import graphs_by_role, merge_trained_models
from tests.helpers.project import train_params
from tests.helpers.tiny_sections import tiny_graphs as build_tiny_graphs


@pytest.fixture
def tiny_graphs(tiny, graph_params):
    """Folds, target scaling and section graphs of the five tiny sections."""
    return build_tiny_graphs(tiny, graph_params)


def _run(tmp_path, folds, scaling, graphs, runner=None, fold_groups=None, **overrides):
    from kedro_datasets.partitions import PartitionedDataset

    from spahgc_kedro.datasets import CacheFolderDataset, TorchObjectDataset

    catalog_class = SharedMemoryDataCatalog if isinstance(runner, ParallelRunner) else DataCatalog
    catalog = catalog_class(
        {
            "section_graphs": MemoryDataset(graphs, copy_mode="assign"),
            "folds": MemoryDataset(folds),
            "target_scaling": MemoryDataset(scaling),
            "params:train": MemoryDataset(train_params(**overrides)),
            "params:dataset": MemoryDataset("tiny"),
            "params:encoder": MemoryDataset("random"),
            "params:prediction_chunk_spots": MemoryDataset(0),
            "trained_models": TorchObjectDataset(filepath=str(tmp_path / "models.pt")),
            "fold_models": CacheFolderDataset(
                path=str(tmp_path / "fold_models"),
                dataset="spahgc_kedro.datasets.TorchObjectDataset",
                filename_suffix=".pt",
            ),
            "predictions": PartitionedDataset(
                path=str(tmp_path / "predictions"),
                dataset="spahgc_kedro.datasets.AnnDataDataset",
                filename_suffix=".h5ad",
            ),
        }
    )
    (runner or SequentialRunner()).run(create_pipeline(fold_groups=fold_groups), catalog)
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
    with pytest.raises(FileNotFoundError, match="--pipeline=graph"):
        graphs_by_role(partial, folds, fold, "train")


def test_graphs_of_an_older_fold_plan_are_refused(tiny_graphs):
    """folds.json rewritten by a graph stage that then failed: the old graphs must not train the new plan."""
    folds, scaling, graphs = tiny_graphs
    fold = next(iter(folds["folds"]))
    assert len(graphs_by_role(graphs, folds, fold, "train")) == len(folds["folds"][fold]["train"])
    spec = folds["folds"][fold]
    moved = {**spec, "validation": spec["train"][:1], "train": spec["train"][1:] + spec["validation"]}
    changed = {**folds, "folds": {**folds["folds"], fold: moved}}
    with pytest.raises(FileNotFoundError, match="another fold plan.*--pipeline=graph"):
        graphs_by_role(graphs, changed, fold, "train")


def test_fold_groups_cover_every_fold_once():
    folds = {"folds": {name: {} for name in ["C5", "C2", "C4", "C3", "C6"]}}
    groups = [{fold: {"group": g} for fold in members(folds["folds"], g, 2)} for g in range(2)]
    assert list(groups[0]) == ["C2", "C4", "C6"] and list(groups[1]) == ["C3", "C5"]
    assert list(merge_trained_models(folds, *groups)) == ["C2", "C3", "C4", "C5", "C6"]
    with pytest.raises(ValueError, match=r"\['C3', 'C5'\]"):
        merge_trained_models(folds, groups[0])
    with pytest.raises(ValueError, match="two work groups"):
        merge_trained_models(folds, groups[0], groups[0])


def test_pipeline_has_one_train_node_per_fold_group():
    names = [n.name for n in create_pipeline(fold_groups=3).nodes]
    assert [n for n in names if n.startswith("train_fold_group_")] == [f"train_fold_group_{g}" for g in range(3)]
    assert "merge_trained_models" in names


def test_parallel_runner_trains_fold_groups_like_the_sequential_runner(tmp_path, tiny_graphs, monkeypatch):
    # the project's settings choose spawn; this test runs without a Kedro session
    monkeypatch.setenv("KEDRO_MP_CONTEXT", "spawn")
    folds, scaling, builders = tiny_graphs
    # built graphs: the builders are closures, which cannot cross processes (a catalog's partitions can)
    graphs = {key: build() for key, build in builders.items()}
    # kedro-mlflow's hooks log from each worker: create the test's store here, so two workers never race to,
    # and work in tmp_path, where MLflow's default experiment puts its artifacts (./mlruns)
    import mlflow

    monkeypatch.chdir(tmp_path)
    mlflow.MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"]).search_experiments()
    sequential, _ = _run(tmp_path / "sequential", folds, scaling, graphs, fold_groups=2, threads=1)
    parallel, predictions = _run(
        tmp_path / "parallel", folds, scaling, graphs, runner=ParallelRunner(max_workers=2), fold_groups=2, threads=1
    )
    assert set(parallel) == set(folds["folds"]) == set(predictions)
    for fold in folds["folds"]:
        assert parallel[fold]["history"] == sequential[fold]["history"]


def test_a_rerun_reuses_stored_fold_models_and_retrains_only_what_changed(tmp_path, tiny_graphs, monkeypatch, caplog):
    """An interrupted or repeated run trains only the folds it lacks; changed settings, a damaged file or
    `train.resume: false` train again."""
    import torch

    from spahgc_kedro.model import training

    folds, scaling, graphs = tiny_graphs
    fits = []
    real_fit = training.fit
    monkeypatch.setattr(training, "fit", lambda *args, **kwargs: fits.append(1) or real_fit(*args, **kwargs))
    first, _ = _run(tmp_path, folds, scaling, graphs)
    names = sorted(folds["folds"])
    assert len(fits) == len(names)
    assert sorted(path.stem for path in (tmp_path / "fold_models").glob("*.pt")) == names

    fits.clear()
    again, predictions = _run(tmp_path, folds, scaling, graphs)
    assert fits == []
    for fold in names:
        assert again[fold]["history"] == first[fold]["history"]
        assert all(torch.equal(again[fold]["state_dict"][k], v) for k, v in first[fold]["state_dict"].items())
    assert set(predictions) == set(names)

    (tmp_path / "fold_models" / f"{names[0]}.pt").write_bytes(b"half-written")
    with caplog.at_level("WARNING"):
        _run(tmp_path, folds, scaling, graphs)
    assert len(fits) == 1 and f"Fold {names[0]}: the stored model cannot be read" in caplog.text

    fits.clear()
    _run(tmp_path, folds, scaling, graphs, lr=2e-4)
    assert len(fits) == len(names)
    fits.clear()
    _run(tmp_path, folds, scaling, graphs, lr=2e-4, resume=False)
    assert len(fits) == len(names)
