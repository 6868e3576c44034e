"""Training and prediction contracts the bookkeeping tests do not pin: seeding, loss terms, tiles and chunking."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import HeteroData

from spahgc_kedro.graph_store import SectionGraphs
from spahgc_kedro.model import FitResult, ModelConfig, SpaHGC, TrainConfig, pcc_per_gene, predict, set_seed
from spahgc_kedro.model.contrastive import Predictor, Teacher, complementary_masks, contrastive_loss
from spahgc_kedro.model.spahgc import REFERENCE_EDGES, SPATIAL_EDGES
from spahgc_kedro.model.training import (
    _Chunk,
    _train_step,
    predict_in_chunks,
    spatial_tiles,
    training_key,
    training_steps,
)
from tests.helpers.random_graphs import D, G, make_graph


def _kept_section(n: int = 30, m: int = 12, k: int = 3, seed: int = 0):
    """A section left in an in-memory store (features read when asked for) and the same graph assembled whole."""
    rng = np.random.default_rng(seed)
    genes = [f"g{i}" for i in range(G)]
    sections = {
        section_id: {
            "embedding": rng.normal(size=(size, D)).astype(np.float32),
            "expression": rng.random((size, G)).astype(np.float32),
            "positions": rng.random((size, 2)) * 1000.0,
            "near_edges": np.stack([np.arange(size), np.roll(np.arange(size), 1)]),
            "spot_ids": [f"{section_id}_{i}" for i in range(size)],
        }
        for section_id, size in (("T", n), ("R", m))
    }
    fold = {
        "mean": np.zeros(D, np.float32),
        "std": np.ones(D, np.float32),
        "genes": genes,
        "min": np.zeros(G, np.float32),
        "max": np.ones(G, np.float32),
        "transform": "log10",
    }
    links = {
        "reference_sections": ["R"],
        "section_index": np.zeros(m, np.int64),
        "spot_index": np.arange(m),
        "refer_source": rng.integers(0, m, (n, k)),
        "close_edges": np.stack([rng.integers(0, m, 2 * m), np.repeat(np.arange(m), 2)]),
    }
    plans = {"f": {"train": ["R"], "validation": [], "test": ["T"]}}
    graphs = SectionGraphs(plans, genes, sections.__getitem__, lambda name: fold, lambda name, section_id: links)
    return graphs.stored("f/T"), graphs["f/T"]()


def _seeded_model(seed: int = 0, **settings) -> SpaHGC:
    """A SpaHGC for the test graphs, initialised from `seed` without touching torch's global generator."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return SpaHGC(D, G, **{"hidden": 16, "n_layers": 1, "heads": 2, **settings})


def _layer_calls(model: SpaHGC) -> list[str]:
    """A list that grows by 'target' / 'reference' each time the model's first layer computes new target / reference
    states (both in a whole pass, one of them per chunk)."""
    calls: list[str] = []
    layer = model.layers[0]
    for kind in ("target", "reference"):
        computed = getattr(layer, f"to_{kind}")

        def counted(*args, kind=kind, computed=computed):
            calls.append(kind)
            return computed(*args)

        setattr(layer, f"to_{kind}", counted)
    return calls


@pytest.fixture
def global_random_state():
    """Restore python's, numpy's and torch's global generators and torch's determinism setting after the test."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    deterministic = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    random.setstate(states[0])
    np.random.set_state(states[1])
    torch.set_rng_state(states[2])
    torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])


def test_a_checkpoint_made_outside_a_run_names_no_run():
    """Without an MLflow run the checkpoint's run id is empty, which evaluation reads as 'no run'."""
    result = FitResult(state_dict={}, target_dim=D, n_genes=G, model=ModelConfig())
    assert result.to_checkpoint()["mlflow_run_id"] == ""
    assert result.to_checkpoint("abc")["mlflow_run_id"] == "abc"


def test_training_key_takes_config_values_that_are_not_json_types():
    """A config built from numpy values (a sweep over np.arange) still has a key, and the key follows the value."""
    train = [make_graph(seed=1)]
    epochs = np.arange(3, 5)
    key = training_key(TrainConfig(epochs=epochs[0]), train, [])
    assert training_key(TrainConfig(epochs=epochs[0]), train, []) == key
    assert training_key(TrainConfig(epochs=epochs[1]), train, []) != key


def test_training_key_tells_which_node_type_holds_a_tensor():
    """The same tensors under exchanged node types (target <-> reference) are another graph: another key."""
    first, second = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    graph, swapped = HeteroData(), HeteroData()
    graph["target"].x, graph["reference"].x = first, second
    # inserted in the other order, so the stores are visited reference first: only their names differ
    swapped["reference"].x, swapped["target"].x = first, second
    assert training_key(TrainConfig(), [graph], []) != training_key(TrainConfig(), [swapped], [])


def test_set_seed_seeds_python_numpy_and_torch_and_asks_for_deterministic_kernels_warning_only(global_random_state):
    """set_seed makes python's, numpy's and torch's draws repeat, and turns on deterministic kernels in warn-only mode."""

    def draws() -> tuple[float, float, float]:
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    set_seed(5)
    first = draws()
    set_seed(5)
    assert draws() == first
    set_seed(6)
    assert all(a != b for a, b in zip(draws(), first, strict=True))
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()


def test_pcc_is_undefined_up_to_the_variance_tolerance_and_defined_above_it():
    """A gene whose variance product is 1e-12 or less counts as constant (NaN); just above, it has its PCC."""
    pred = torch.tensor([[0.5, 0.5], [-0.5, -0.5]])
    # float32: 0.5**2 * 2 * (1e-6)**2 rounds to exactly float32(1e-12), the tolerance; 2e-6 gives 4e-12
    target = torch.tensor([[1e-6, 2e-6], [-1e-6, -2e-6]])
    centred = target - target.mean(dim=0)
    variance_product = (pred - pred.mean(dim=0)).square().sum(dim=0) * centred.square().sum(dim=0)
    assert variance_product[0] == torch.tensor(1e-12, dtype=torch.float32)
    pcc = pcc_per_gene(pred, target)
    assert math.isnan(pcc[0]) and pcc[1] == pytest.approx(1.0)


def _step_setup(**settings):
    """A dropout-free model, its predictor and EMA teacher, a config with every loss term weighted, and a graph."""
    model_config = ModelConfig(hidden=16, n_layers=1, heads=2, dropout=0.0, attention_dropout=0.0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model, predictor = SpaHGC.from_config(D, G, model_config), Predictor(16)
    config = TrainConfig(model=model_config, w_pcc=0.5, w_gene_specific=0.3, w_target=0.2, w_reference=0.1, **settings)
    return model, predictor, Teacher(model, "ema", 0.99), config, make_graph(seed=1)


def _partial_pcc(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean over genes of the correlation of pred and target after least squares on [1, target spot depth]."""
    design = np.stack([np.ones(len(target)), target.mean(axis=1)], axis=1)

    def residuals(values: np.ndarray) -> np.ndarray:
        return values - design @ np.linalg.lstsq(design, values, rcond=None)[0]

    a, b = residuals(pred.astype(np.float64)), residuals(target.astype(np.float64))
    return float(np.mean([np.corrcoef(a[:, j], b[:, j])[0, 1] for j in range(a.shape[1])]))


def _view(graph: HeteroData, config: TrainConfig, seed: int, which: int) -> dict[str, torch.Tensor]:
    """View `which` (0: the online one, 1: the teacher's) of the complementary masks drawn from a generator at `seed`."""
    generator = torch.Generator().manual_seed(seed)
    view = {}
    for node_type, p in (("target", config.mask_target), ("reference", config.mask_reference)):
        x = graph[node_type].x
        view[node_type] = x * complementary_masks(tuple(x.shape), p, generator)[which]
    return view


def test_a_train_step_loss_is_the_weighted_sum_of_the_terms_it_returns():
    """loss = mse + w_pcc (1 - PCC) + w_gs (1 - gene-specific PCC) + w_target, w_reference x contrastive terms."""
    model, predictor, teacher, config, graph = _step_setup()
    terms = _train_step(model, graph, config, teacher, predictor, torch.Generator().manual_seed(3))
    # the supervised terms from the same prediction (view 1 through the online encoder)
    edges, y = graph.edge_index_dict, graph["target"].y
    pred = model.decode(model.encode(_view(graph, config, 3, 0), edges), edges).detach()
    expected_gs = 1 - _partial_pcc(pred.numpy(), y.numpy())
    assert terms["gene_specific_loss"].item() == pytest.approx(expected_gs, rel=1e-4)
    assert terms["pcc_loss"].item() == pytest.approx(1 - pcc_per_gene(pred, y).nanmean().item(), rel=1e-5)
    assert min(terms["contrastive_target"].item(), terms["contrastive_reference"].item()) > 1e-3
    expected = (
        terms["mse"]
        + 0.5 * terms["pcc_loss"]
        + 0.3 * terms["gene_specific_loss"]
        + 0.2 * terms["contrastive_target"]
        + 0.1 * terms["contrastive_reference"]
    )
    torch.testing.assert_close(terms["loss"], expected)


def test_a_train_step_supervises_the_online_view_and_matches_its_prediction_to_the_teachers_view():
    """Supervision reads view 1; the contrastive terms compare predictor(online(view 1)) with teacher(view 2)."""
    model, predictor, teacher, config, graph = _step_setup()
    terms = _train_step(model, graph, config, teacher, predictor, torch.Generator().manual_seed(3))
    edges = graph.edge_index_dict
    online = model.encode(_view(graph, config, 3, 0), edges)
    target_side = teacher.encode(_view(graph, config, 3, 1), edges)
    predicted = predictor(online)
    torch.testing.assert_close(terms["mse"], F.mse_loss(model.decode(online, edges), graph["target"].y))
    for key in ("target", "reference"):
        torch.testing.assert_close(terms[f"contrastive_{key}"], contrastive_loss(predicted[key], target_side[key]))


def test_spots_at_one_position_are_tiled_in_spot_order():
    """Where positions tie at a split, the lower-numbered spots go to the first tile (the same tiles on any device)."""
    tiles = spatial_tiles(torch.zeros(20, 2), 10)
    assert [t.tolist() for t in tiles] == [list(range(10)), list(range(10, 20))]
    tiles = spatial_tiles(torch.zeros(40, 2), 10)
    assert [t.tolist() for t in tiles] == [list(range(start, start + 10)) for start in (0, 10, 20, 30)]


def test_training_tiles_follow_the_spot_positions_not_the_spot_order():
    """With pixel positions, a large section's tiles are the spatial halves, whatever order the spots are in."""
    graph = make_graph(n=8, seed=1)
    # spots 0, 2, 4, 6 lie left (x 0-3), spots 1, 3, 5, 7 right (x 4-7)
    graph["target"].pos = torch.tensor([[0, 0], [4, 0], [1, 0], [5, 0], [2, 0], [6, 0], [3, 0], [7, 0]]).float()
    steps = training_steps([graph], 4)
    assert [(i, t.tolist()) for i, t in steps] == [(0, [0, 2, 4, 6]), (0, [1, 3, 5, 7])]


def test_a_section_left_in_the_store_is_one_tile_of_every_spot_when_it_is_not_split():
    """A stored section within the spot limit (or with no limit) is still a tile: every spot, never a whole graph."""
    kept, _ = _kept_section(n=30)
    for max_spots in (0, 30, 31):
        steps = training_steps([kept], max_spots)
        assert len(steps) == 1 and steps[0][0] == 0, max_spots
        assert steps[0][1] is not None and steps[0][1].tolist() == list(range(30)), max_spots


def test_prediction_in_chunks_runs_each_layer_once_per_chunk_with_the_whole_graph_numbers():
    """chunk_spots c < N runs each layer on ceil(N / c) chunks of targets, then on as many chunks of references
    (c = 1 included; fewer when there are fewer references than chunks); c >= N or 0 is one whole pass."""
    graph = make_graph(n=24, seed=1)
    n_references = graph["reference"].num_nodes
    model = _seeded_model()
    calls = _layer_calls(model)
    whole = predict(model, graph)
    assert calls == ["target", "reference"]
    for chunk, n_chunks in ((1, 24), (4, 6), (5, 5)):
        calls.clear()
        np.testing.assert_allclose(predict(model, graph, chunk_spots=chunk), whole, rtol=1e-5, atol=1e-6)
        assert calls == ["target"] * n_chunks + ["reference"] * min(n_chunks, n_references), chunk
    for chunk in (24, 0):
        calls.clear()
        np.testing.assert_allclose(predict(model, graph, chunk_spots=chunk), whole, rtol=1e-5, atol=1e-6)
        assert calls == ["target", "reference"], chunk


def test_a_chunk_of_references_brings_in_only_the_targets_sending_to_them():
    """A chunk of targets holds no reference's receivers, a chunk of references no target's: the halo is senders."""
    graph = make_graph(n=24, seed=1)
    edges = graph.edge_index_dict
    n_targets, n_references = graph["target"].num_nodes, graph["reference"].num_nodes
    targets = torch.zeros(n_targets, dtype=torch.bool)
    targets[:6] = True
    chunk = _Chunk.of(edges, targets, torch.zeros(n_references, dtype=torch.bool))
    spatial, refer = edges[SPATIAL_EDGES], edges[REFERENCE_EDGES]
    into = refer[1] < 6
    expected_targets = torch.cat([torch.arange(6), spatial[0][spatial[1] < 6]]).unique()
    assert torch.equal(chunk.targets, expected_targets)
    assert torch.equal(chunk.references, refer[0][into].unique())
    references = torch.zeros(n_references, dtype=torch.bool)
    references[:6] = True
    chunk = _Chunk.of(edges, torch.zeros(n_targets, dtype=torch.bool), references)
    assert torch.equal(chunk.targets, refer[1][refer[0] < 6].unique())
    assert chunk.own_targets.numel() == 0 and chunk.own_references.tolist() == list(range(6))


def test_a_stored_section_is_predicted_in_chunks_of_the_asked_size():
    """A stored section runs each layer on ceil(N / chunk_spots) chunks of targets and as many of references (one
    chunk of each without a chunk size): the same numbers."""
    kept, assembled = _kept_section(n=30)
    n_references = assembled["reference"].num_nodes
    model = _seeded_model()
    whole = predict(model, assembled)
    calls = _layer_calls(model)
    for chunk, n_chunks in ((1, 30), (7, 5), (0, 1)):
        calls.clear()
        np.testing.assert_allclose(predict(model, kept, chunk_spots=chunk), whole, rtol=1e-5, atol=1e-6)
        assert calls == ["target"] * n_chunks + ["reference"] * min(n_chunks, n_references), chunk


def test_chunked_prediction_keeps_the_models_precision():
    """A float64 model's chunked pass is float64 and equals its whole pass at float64 precision."""
    graph = make_graph(seed=1)
    model = _seeded_model(n_layers=2).double().eval()
    x_dict = {kind: x.double() for kind, x in graph.x_dict.items()}
    with torch.no_grad():
        whole = model(x_dict, graph.edge_index_dict)
        chunked = predict_in_chunks(model, x_dict, graph.edge_index_dict, 5)
    assert chunked.dtype == whole.dtype == torch.float64
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-12)
