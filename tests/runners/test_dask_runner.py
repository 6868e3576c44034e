"""DaskRunner on a two-worker local Dask cluster: the train pipeline on tiny generated
graphs gives what SequentialRunner gives, independent nodes run on both workers at once,
memory datasets travel between workers, and a failing node is named."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node
from kedro.runner import SequentialRunner

from spahgc_kedro.pipelines.graph import create_pipeline as graph_pipeline
from spahgc_kedro.pipelines.train import create_pipeline as train_pipeline
from tests.helpers.partitions import partitioned
from tests.helpers.project import train_params

pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes, as `dask worker --nthreads 1` would give."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster


def _dask_runner(cluster):
    from spahgc_kedro.runners import DaskRunner

    return DaskRunner(client_args={"address": cluster.scheduler_address})


def _catalog(root, run, tiny, graph_params):
    """Tiny sections, graphs and folds under `root`; this run's models and predictions under `root / run`."""
    from kedro_datasets.json import JSONDataset

    from spahgc_kedro.datasets import CacheFolderDataset, SectionGraphStore, TorchObjectDataset

    sections, embeddings, manifest = tiny
    # A fixed gene list: HVG panels would need scanpy, slow to import, and are tested elsewhere.
    genes = root / "genes.txt"
    genes.write_text("\n".join(f"G{g}" for g in range(12)))
    return DataCatalog(
        {
            "sections": partitioned(root / "sections", sections),
            "patch_embeddings": partitioned(root / "embeddings", embeddings),
            "section_manifest": MemoryDataset(manifest),
            "params:graph": MemoryDataset(graph_params),
            "params:datasets": MemoryDataset(
                {"tiny": {"spatial_radius_spacings": 1.5, "gene_panel": {"rule": "list", "path": str(genes)}}}
            ),
            "params:dataset": MemoryDataset("tiny"),
            "params:encoder": MemoryDataset("random"),
            "params:prediction_chunk_spots": MemoryDataset(0),
            "params:train": MemoryDataset(train_params(epochs=2, threads=1)),
            "folds": JSONDataset(filepath=str(root / "folds.json")),
            "target_scaling": JSONDataset(filepath=str(root / "target_scaling.json")),
            "section_graphs": SectionGraphStore(path=str(root / "graphs")),
            "trained_models": TorchObjectDataset(filepath=str(root / run / "models.pt")),
            "fold_models": CacheFolderDataset(
                path=str(root / run / "fold_models"),
                dataset="spahgc_kedro.datasets.TorchObjectDataset",
                filename_suffix=".pt",
            ),
            "predictions": partitioned(root / run / "predictions"),
        }
    )


def _independent_pairs(pipeline: Pipeline) -> list[tuple[str, str]]:
    """Pairs of nodes neither of which needs the other's outputs."""
    after = {n.name: {m.name for m in pipeline.from_nodes(n.name).nodes} for n in pipeline.nodes}
    names = sorted(after)
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1 :] if b not in after[a] and a not in after[b]]


def test_train_pipeline_runs_on_two_workers_like_sequential(tmp_path, tiny, graph_params, cluster):
    from distributed import Client, get_task_stream

    # The graphs the workers read from disk, made here once: the train pipeline alone has
    # independent nodes and memory datasets, and is the slow stage worth spreading.
    SequentialRunner().run(graph_pipeline(), _catalog(tmp_path, "graph", tiny, graph_params))
    pipeline = train_pipeline()
    in_memory = pipeline.datasets() - set(_catalog(tmp_path, "", tiny, graph_params).keys())
    assert in_memory, "the train pipeline no longer passes memory datasets between its nodes"
    independent = _independent_pairs(pipeline)
    assert independent, "the train pipeline has no nodes that could run at the same time"

    sequential = _catalog(tmp_path, "sequential", tiny, graph_params)
    SequentialRunner().run(pipeline, sequential)
    dask = _catalog(tmp_path, "dask", tiny, graph_params)
    with Client(cluster) as client, get_task_stream(client) as stream:
        _dask_runner(cluster).run(pipeline, dask)

    expected, trained = sequential.load("trained_models"), dask.load("trained_models")
    assert set(trained) == set(expected) == set(sequential.load("folds")["folds"])
    for fold, model in trained.items():
        assert model["history"] == expected[fold]["history"]
        assert model["best_epoch"] == expected[fold]["best_epoch"]
        for name, weights in model["state_dict"].items():
            assert torch.equal(weights, expected[fold]["state_dict"][name]), (fold, name)
    expected_predictions, predictions = sequential.load("predictions"), dask.load("predictions")
    assert sorted(predictions) == sorted(expected_predictions)
    for key, load in predictions.items():
        np.testing.assert_array_equal(load().X, expected_predictions[key]().X)

    # Each node is one Dask task keyed "<node>-node-<run token>".
    ran = {}
    for task in stream.data:
        name = task["key"].rsplit("-node-", 1)[0] if "-node-" in task["key"] else None
        if name is not None:
            compute = [s for s in task["startstops"] if s["action"] == "compute"][0]
            ran[name] = (task["worker"], compute["start"], compute["stop"])
    assert set(ran) == {n.name for n in pipeline.nodes}
    assert len({worker for worker, _, _ in ran.values()}) == 2
    concurrent = [
        (a, b) for a, b in independent if ran[a][0] != ran[b][0] and ran[a][1] < ran[b][2] and ran[b][1] < ran[a][2]
    ]
    assert concurrent, f"no two independent nodes overlapped on different workers: {ran}"
    crossed = [
        (producer.name, name, consumer.name)
        for name in in_memory
        for producer in pipeline.only_nodes_with_outputs(name).nodes
        for consumer in pipeline.only_nodes_with_inputs(name).nodes
        if ran[producer.name][0] != ran[consumer.name][0]
    ]
    assert crossed, f"no memory dataset went from one worker to the other: {ran}"


def _double(x: int) -> int:
    return 2 * x


def _add(a: int, b: int) -> int:
    return a + b


def _refuse(x: int) -> int:
    raise ValueError(f"cannot take {x}")


def test_memory_datasets_travel_and_pipeline_outputs_reach_this_process(cluster, monkeypatch):
    from spahgc_kedro.runners import DaskRunner

    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)
    pipeline = Pipeline(
        [
            node(_double, "params:x", "a", name="double_x"),
            node(_double, "a", "b1", name="double_a"),
            node(_add, ["a", "params:x"], "b2", name="add_x"),
            node(_add, ["b1", "b2"], "total", name="total"),
        ]
    )
    catalog = DataCatalog({"params:x": MemoryDataset(3)})
    outputs = DaskRunner().run(pipeline, catalog)
    assert set(outputs) == {"total"}
    assert catalog.load("total") == 2 * 2 * 3 + (2 * 3 + 3)


def test_a_node_failing_on_a_worker_is_named(cluster, tmp_path):
    from kedro_datasets.json import JSONDataset

    from spahgc_kedro.runners.dask_runner import DaskNodeError

    pipeline = Pipeline(
        [
            node(_double, "params:x", "a", name="double_x"),
            node(_refuse, "a", "b", name="refuse_a"),
            node(_double, "b", "c", name="double_b"),
        ]
    )
    catalog = DataCatalog({"params:x": MemoryDataset(3), "c": JSONDataset(filepath=str(tmp_path / "c.json"))})
    expected = "Node 'refuse_a' failed on a Dask worker: ValueError: cannot take 6"
    with pytest.raises(DaskNodeError, match=expected) as info:
        _dask_runner(cluster).run(pipeline, catalog)
    assert isinstance(info.value.__cause__, ValueError)
    assert any("refuse_a" in note and "tcp://" in note for note in info.value.__cause__.__notes__)
    assert not (tmp_path / "c.json").exists()


def test_without_distributed_the_error_names_the_extra(monkeypatch):
    import importlib.util

    from spahgc_kedro.runners import DaskRunner

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name == "distributed" else find_spec(name, *args)
    )
    with pytest.raises(ImportError, match=r'pip install -e "\.\[dask\]"'):
        DaskRunner()


def test_single_process_datasets_are_refused_before_any_node(tmp_path):
    from kedro.io import CachedDataset
    from kedro_datasets.json import JSONDataset

    from spahgc_kedro.runners import DaskRunner

    pipeline = Pipeline([node(_double, "params:x", "a", name="double_x")])
    catalog = DataCatalog(
        {"params:x": MemoryDataset(3), "a": CachedDataset(JSONDataset(filepath=str(tmp_path / "a.json")))}
    )
    with pytest.raises(AttributeError, match=r"\['a'\] work in one process only"):
        DaskRunner(client_args={"address": "tcp://127.0.0.1:1"}).run(pipeline, catalog)
    assert not (tmp_path / "a.json").exists()


def test_the_local_cluster_listens_on_loopback_only(monkeypatch):
    import distributed

    from spahgc_kedro.runners import DaskRunner
    from spahgc_kedro.runners.dask_runner import SCHEDULER_ADDRESS_ENV

    seen = {}

    class Refused(Exception):
        pass

    def local_cluster(**kwargs):
        seen.update(kwargs)
        raise Refused

    monkeypatch.delenv(SCHEDULER_ADDRESS_ENV, raising=False)
    monkeypatch.setattr(distributed, "LocalCluster", local_cluster)
    with pytest.raises(Refused):
        DaskRunner().run(Pipeline([node(lambda: 1, None, "one")]), DataCatalog())
    assert seen["host"] == "127.0.0.1" and seen["dashboard_address"] is None
