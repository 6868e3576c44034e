"""The torch retrieval path (run here on CPU tensors) against the exact scipy path, and
the `graph.retrieval_device` parameter from the node down to the kNN calls."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spahgc_kedro import graph
from spahgc_kedro.graph import nearest_neighbours, nearest_neighbours_torch, resolve_retrieval_device
from tests.helpers.retrieval import brute_force, built_graphs


@pytest.mark.parametrize("metric", ["l1", "cosine"])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_torch_path_equals_the_scipy_path(metric, exclude_self):
    rng = np.random.default_rng(4)
    # Continuous random data: no two distances of a row within float32 rounding of each other.
    queries = rng.normal(size=(150, 24)).astype(np.float32)
    candidates = queries if exclude_self else rng.normal(size=(230, 24)).astype(np.float32)
    expected_d, expected_i = nearest_neighbours(queries, candidates, 7, metric, 64, exclude_self)
    for block in (5, 64, 1000):
        d, i = nearest_neighbours_torch(queries, candidates, 7, metric, block, exclude_self, device="cpu")
        assert d.dtype == np.float64 and i.dtype == np.int64 and i.shape == (150, 7)
        np.testing.assert_array_equal(i, expected_i)
        np.testing.assert_allclose(d, expected_d, rtol=1e-5, atol=1e-5)
    if exclude_self:
        assert (expected_i != np.arange(150)[:, None]).all()


def test_torch_path_breaks_exact_ties_on_the_lower_index():
    rng = np.random.default_rng(1)
    # Small integers: L1 distances are exact in float32 too, with many ties.
    queries = rng.integers(0, 3, size=(40, 3)).astype(np.float32)
    candidates = rng.integers(0, 3, size=(90, 3)).astype(np.float32)
    _, expected = brute_force(queries, candidates, 7, "l1")
    for block in (4, 7, 50):
        np.testing.assert_array_equal(
            nearest_neighbours_torch(queries, candidates, 7, "l1", block, device="cpu")[1], expected
        )


def test_torch_path_checks_its_arguments():
    points = np.zeros((5, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="graph.metric"):
        nearest_neighbours_torch(points, points, 2, "euclidean", device="cpu")
    with pytest.raises(ValueError, match="Cannot retrieve 5 neighbours among 4"):
        nearest_neighbours_torch(points, points, 5, "l1", exclude_self=True, device="cpu")
    with pytest.raises(ValueError, match=r"^Cannot retrieve 0 neighbours among 5 candidates\.$"):
        nearest_neighbours(points, points, 0, "l1")
    with pytest.raises(ValueError, match=r"^Unknown graph.metric 'euclidean'. Choose one of: l1, cosine\.$"):
        nearest_neighbours(points, points, 2, "euclidean")


def test_retrieval_device_names(monkeypatch):
    assert resolve_retrieval_device("cpu") == resolve_retrieval_device("CPU") == "cpu"
    assert resolve_retrieval_device(None) == resolve_retrieval_device("") == "cpu"  # an empty YAML value
    with pytest.raises(ValueError, match="Choose one of: cpu, cuda, auto"):
        resolve_retrieval_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_retrieval_device("auto") == "cpu"
    with pytest.raises(ValueError) as error:
        resolve_retrieval_device("cuda")
    assert str(error.value) == (
        f"graph.retrieval_device is 'cuda' but torch {torch.__version__} sees no CUDA GPU. "
        "Use --params graph.retrieval_device=cpu (exact, float64) or auto."
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_retrieval_device("auto") == "cuda"
    assert resolve_retrieval_device("cuda:1") == "cuda:1"


def test_node_fails_clearly_when_cuda_is_requested_without_a_gpu(tiny, graph_params, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="retrieval_device=cpu"):
        built_graphs(tiny, graph_params, fold="S5", retrieval_device="cuda")


def test_cuda_setting_sends_every_knn_to_the_torch_path(tiny, graph_params, monkeypatch):
    # Pretend to have a GPU and run the torch code on CPU tensors: same graphs as the CPU path.
    calls = []

    def torch_on_cpu(queries, candidates, k, metric, block_size, exclude_self, device):
        calls.append((device, exclude_self))
        return nearest_neighbours_torch(queries, candidates, k, metric, block_size, exclude_self, "cpu")

    _, _, expected = built_graphs(tiny, graph_params, fold="S5")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(graph, "nearest_neighbours_torch", torch_on_cpu)
    _, _, graphs = built_graphs(tiny, graph_params, fold="S5", retrieval_device="auto")
    assert {device for device, _ in calls} == {"cuda"}
    assert {exclude for _, exclude in calls} == {False, True}  # cross-section retrieval and close kNN
    for key, data in graphs.items():
        for edge in (("reference", "refer", "target"), ("reference", "close", "reference")):
            assert torch.equal(data[edge].edge_index, expected[key][edge].edge_index), (key, edge)
        assert torch.equal(data["reference"].x, expected[key]["reference"].x)
