"""Training bookkeeping on tiny random graphs: the fold model's reuse key, checkpoints, and shape checks."""

from __future__ import annotations

from dataclasses import fields, replace

import pytest
import torch
from torch_geometric.data import HeteroData

from spahgc_kedro.model import FitResult, ModelConfig, TrainConfig, fit
from spahgc_kedro.model.training import training_key
from tests.helpers.random_graphs import D, G, make_graph, same_weights, tiny_config


@pytest.fixture
def graphs():
    """Two training graphs and one validation graph, fresh for each test (the tests edit them)."""
    return [make_graph(seed=1), make_graph(seed=2)], [make_graph(seed=3)]


def test_training_key_ignores_where_a_model_trains_and_whether_it_is_reused(graphs):
    train, validation = graphs
    key = training_key(TrainConfig(), train, validation)
    assert len(key) == 16 and int(key, 16) >= 0
    assert training_key(TrainConfig(device="cuda", threads=3, resume=False), train, validation) == key
    assert training_key(TrainConfig(), train, validation) == key


@pytest.mark.parametrize("change", [{"seed": 1}, {"epochs": 7}, {"model": ModelConfig(hidden=8)}, {"w_pcc": 0.0}])
def test_training_key_follows_every_setting_that_changes_the_model(graphs, change):
    train, validation = graphs
    assert training_key(TrainConfig(**change), train, validation) != training_key(TrainConfig(), train, validation)


def test_training_key_follows_which_graph_trains_and_which_validates(graphs):
    train, validation = graphs
    key = training_key(TrainConfig(), train, validation)
    assert training_key(TrainConfig(), train[:1], [train[1], *validation]) != key
    assert training_key(TrainConfig(), train[::-1], validation) != key


def test_training_key_follows_tensor_values_dtypes_shapes_stores_and_attributes(graphs):
    train, validation = graphs
    key = training_key(TrainConfig(), train, validation)

    def key_after(edit) -> str:
        graph = train[0].clone()
        edit(graph)
        return training_key(TrainConfig(), [graph, train[1]], validation)

    def values(graph):
        graph["target"].y[0, 0] += 1.0

    def dtype(graph):
        # the same bytes read as another dtype
        graph["target"].x = graph["target"].x.view(torch.int32)

    def shape(graph):
        graph["target"].y = graph["target"].y.reshape(G, -1)

    def attribute(graph):
        graph.section_id = "another"

    for edit in (values, dtype, shape, attribute):
        assert key_after(edit) != key, edit.__name__


def test_training_key_tells_two_node_types_apart_when_their_tensors_swap():
    first, second = make_graph(seed=1), make_graph(seed=1)
    # same tensors, stored under swapped node types: only the store names tell the graphs apart
    second["target"].x, second["target"].y = first["target"].y.clone(), first["target"].x.clone()
    first_key = training_key(TrainConfig(), [first], [])
    assert training_key(TrainConfig(), [second], []) != first_key


def test_training_key_follows_the_model_code(graphs, monkeypatch):
    from pathlib import Path

    train, validation = graphs
    key = training_key(TrainConfig(), train, validation)
    read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda path: read_bytes(path) + (b"#" if path.name == "spahgc.py" else b""))
    assert training_key(TrainConfig(), train, validation) != key


def test_a_checkpoint_gives_back_the_result_it_was_made_from():
    result = fit(
        [make_graph(seed=1)],
        [make_graph(seed=2)],
        TrainConfig(epochs=2, lr=1e-3, model=ModelConfig(hidden=8, n_layers=1, heads=2)),
        progress=False,
    )
    back = FitResult.from_checkpoint(result.to_checkpoint("run"))
    for name in (f.name for f in fields(FitResult)):
        if name == "state_dict":
            assert back.state_dict.keys() == result.state_dict.keys()
            assert all(torch.equal(back.state_dict[k], result.state_dict[k]) for k in result.state_dict)
        else:
            assert getattr(back, name) == getattr(result, name), name
    assert (back.target_dim, back.n_genes, back.best_epoch) == (D, G, result.best_epoch)
    assert type(back.target_dim) is int and type(back.best_epoch) is int and isinstance(back.history, list)
    assert len(back.history) == 2 and back.model == ModelConfig(hidden=8, n_layers=1, heads=2)


def _section(graph, section_id="C3", fold="C2"):
    graph.section_id, graph.fold = section_id, fold
    return graph


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda g: setattr(g["target"], "x", g["target"].x[:, :5]),
            rf"^section 'C3' \(fold 'C2'\): target.x has shape \(24, 5\), expected \[N, {D}\]; rebuild the "
            "fold's graphs with one embedding encoder$",
        ),
        (
            lambda g: setattr(g["target"], "x", g["target"].x[:, :, None]),
            rf"target.x has shape \(24, {D}, 1\), expected \[N, {D}\]",
        ),
        (
            lambda g: setattr(g["reference"], "x", g["reference"].x[:, :-1]),
            rf"^section 'C3' \(fold 'C2'\): reference.x has {D + G - 1} columns, expected {D} \+ {G} "
            r"\(embedding \|\| expression\); rebuild the fold's graphs with one gene panel$",
        ),
        (
            lambda g: delattr(g["target"], "y"),
            rf"^section 'C3' \(fold 'C2'\): target.y missing or not \[N, {G}\]; training graphs need labels$",
        ),
        (lambda g: setattr(g["target"], "y", g["target"].y[:-1]), r"target.y missing or not \[N, 6\]"),
        (lambda g: setattr(g["target"], "y", g["target"].y[:, :-1]), r"target.y missing or not \[N, 6\]"),
    ],
)
def test_a_graph_unlike_the_first_training_graph_is_named_with_the_fix(edit, message):
    bad = _section(make_graph(seed=2))
    edit(bad)
    config = TrainConfig(epochs=1, model=ModelConfig(hidden=8, n_layers=1, heads=2))
    with pytest.raises(ValueError, match=message):
        fit([make_graph(seed=1)], [bad], config, progress=False)
    with pytest.raises(ValueError, match=message):
        fit([make_graph(seed=1), bad], [], config, progress=False)


def test_a_graph_without_a_name_is_described_by_question_marks():
    bad = make_graph(seed=2)
    del bad.section_id
    bad["target"].x = bad["target"].x[:, :5]
    with pytest.raises(ValueError, match=r"^section '\?' \(fold '\?'\): target.x"):
        fit([make_graph(seed=1)], [bad], TrainConfig(epochs=1), progress=False)


def _two_islands(seed: int = 1) -> HeteroData:
    """Two random section graphs side by side (far apart in x, no edge between them) as one graph."""
    # as in the graph contract, every reference node is retrieved by some target spot
    first, second = (
        graph.subgraph({"reference": graph["reference", "refer", "target"].edge_index[0].unique()})
        for graph in (make_graph(seed=seed), make_graph(seed=seed + 10))
    )
    union = HeteroData()
    n, m = first["target"].num_nodes, first["reference"].num_nodes
    for store in ("target", "reference"):
        union[store].x = torch.cat([first[store].x, second[store].x])
    union["target"].y = torch.cat([first["target"].y, second["target"].y])
    grid = torch.stack([torch.arange(n) % 6, torch.arange(n) // 6], dim=1).float() * 100
    union["target"].pos = torch.cat([grid, grid + torch.tensor([10_000.0, 0.0])])
    for kind in first.edge_types:
        src, dst = kind[0], kind[2]
        offset = torch.tensor([[n if src == "target" else m], [n if dst == "target" else m]])
        # (m: the first island's reference count; both islands' spots and references keep their order)
        union[kind].edge_index = torch.cat([first[kind].edge_index, second[kind].edge_index + offset], dim=1)
    return union


def test_spatial_tiles_are_quadrants_of_a_grid_and_cover_every_spot_once():
    from spahgc_kedro.model.training import spatial_tiles

    pos = torch.stack([torch.arange(16) % 4, torch.arange(16) // 4], dim=1).float()
    for max_spots in (4, 5, 7):
        tiles = spatial_tiles(pos, max_spots)
        assert sorted(torch.cat(tiles).tolist()) == list(range(16))
        quadrants = {tuple(sorted(((pos[t] // 2) * torch.tensor([1.0, 10.0])).sum(1).unique().tolist())) for t in tiles}
        assert len(tiles) == 4 and all(len(q) == 1 for q in quadrants), max_spots
    assert [t.tolist() for t in spatial_tiles(pos, 16)] == [list(range(16))]
    assert sorted(len(t) for t in spatial_tiles(pos, 3)) == [2] * 8


def test_a_tile_holding_a_whole_island_predicts_what_the_full_graph_predicts():
    from spahgc_kedro.model import SpaHGC
    from spahgc_kedro.model.training import spatial_tiles, tile_subgraph

    graph = _two_islands()
    graph.spot_ids = [f"spot{i}" for i in range(graph["target"].num_nodes)]
    model = SpaHGC(D, G, hidden=16, n_layers=2, heads=2).eval()
    with torch.no_grad():
        full = model(graph.x_dict, graph.edge_index_dict)
        tiles = spatial_tiles(graph["target"].pos, 24)
        assert [t.tolist() for t in tiles] == [list(range(24)), list(range(24, 48))]
        for tile in tiles:
            sub = tile_subgraph(graph, tile)
            torch.testing.assert_close(model(sub.x_dict, sub.edge_index_dict), full[tile])
            assert "spot_ids" not in sub and len(graph.spot_ids) == 48
        # each island's references go with its spots, none with the other island's
        subgraphs = [tile_subgraph(graph, tile) for tile in tiles]
        assert sum(sub["reference"].num_nodes for sub in subgraphs) == graph["reference"].num_nodes


def test_tiled_training_steps_once_per_tile_and_is_reproducible():
    from spahgc_kedro.model.training import training_steps

    graph = _two_islands()
    assert [(i, None if t is None else len(t)) for i, t in training_steps([graph], 24)] == [(0, 24), (0, 24)]
    assert training_steps([graph, graph], 0) == [(0, None), (1, None)] == training_steps([graph, graph], 48)
    config = TrainConfig(epochs=3, lr=1e-3, max_full_graph_spots=24, model=ModelConfig(hidden=16, n_layers=2, heads=2))
    first = fit([graph], [make_graph(seed=5)], config, progress=False)
    again = fit([graph], [make_graph(seed=5)], config, progress=False)
    assert all(torch.equal(first.state_dict[k], again.state_dict[k]) for k in first.state_dict)
    whole = fit([graph], [make_graph(seed=5)], replace(config, max_full_graph_spots=0), progress=False)
    assert not all(torch.equal(first.state_dict[k], whole.state_dict[k]) for k in first.state_dict)
    # a limit above the section's size trains the whole graph: the same numbers as no limit
    above = fit([graph], [make_graph(seed=5)], replace(config, max_full_graph_spots=48), progress=False)
    assert all(torch.equal(whole.state_dict[k], above.state_dict[k]) for k in whole.state_dict)


def test_no_training_tile_is_held_while_validating(monkeypatch):
    """The validation pass of a large section comes after the epoch's last tile: that tile (its features are hundreds
    of MB at 8 um) must be freed by then, not kept alive by the training loop."""
    import gc
    import weakref

    from spahgc_kedro.model import training

    tiles, alive = [], []
    step_graph, validate = training._step_graph, training._validate

    def kept_step_graph(*args):
        tile = step_graph(*args)
        tiles.append(weakref.ref(tile))
        return tile

    def checked_validate(*args):
        gc.collect()
        alive.append(sum(ref() is not None for ref in tiles))
        return validate(*args)

    monkeypatch.setattr(training, "_step_graph", kept_step_graph)
    monkeypatch.setattr(training, "_validate", checked_validate)
    config = TrainConfig(epochs=2, max_full_graph_spots=24, model=ModelConfig(hidden=16, n_layers=1, heads=2))
    fit([_two_islands()], [make_graph(seed=5)], config, progress=False)
    assert len(tiles) == 4 and alive == [0, 0]


def test_validation_in_chunks_gives_the_whole_graph_numbers():
    from spahgc_kedro.model import SpaHGC
    from spahgc_kedro.model.training import _validate

    model = SpaHGC(D, G, hidden=16, n_layers=2, heads=2)
    graphs = [_two_islands(), make_graph(seed=3)]
    whole = _validate(model, graphs)
    for chunk in (5, 24, 30):
        assert _validate(model, graphs, chunk) == pytest.approx(whole, rel=1e-5)


def test_section_scores_in_gene_blocks_equal_scipy_per_gene_pearson_and_numpy_mse():
    import numpy as np
    from scipy.stats import pearsonr

    from spahgc_kedro.model.training import _section_scores

    rng = np.random.default_rng(0)
    pred, y = rng.normal(size=(50, 7)).astype(np.float32), rng.normal(size=(50, 7)).astype(np.float32)
    y[:, 4] = 0.5  # a constant gene has no PCC and is left out of the mean
    expected_pcc = np.mean([pearsonr(pred[:, g], y[:, g])[0] for g in range(7) if g != 4])
    expected_mse = np.mean((pred.astype(np.float64) - y) ** 2)
    for genes_per_block in (1, 3, 7, 100):
        mse, pcc = _section_scores(torch.from_numpy(pred), torch.from_numpy(y), genes_per_block)
        assert mse == pytest.approx(expected_mse, rel=1e-5) and pcc == pytest.approx(expected_pcc, rel=1e-5)
    y[:] = 1.0
    assert np.isnan(_section_scores(torch.from_numpy(pred), torch.from_numpy(y), 3)[1])


def test_released_memory_returns_the_allocators_freed_blocks_to_the_system():
    import ctypes

    from spahgc_kedro.model.training import release_freed_memory
    from tests.helpers.memory import anonymous_mib

    libc = ctypes.CDLL(None)
    if not hasattr(libc, "malloc_trim"):
        pytest.skip("no glibc malloc_trim here: release_freed_memory has nothing to call")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    # blocks below glibc's mmap threshold come from the heap; freeing every other one leaves holes that
    # free() keeps for reuse, as a training step's tensors do
    size, count = 64 * 2**10, 2000
    blocks = [libc.malloc(size) for _ in range(count)]
    for block in blocks:
        ctypes.memset(block, 1, size)
    for block in blocks[::2]:
        libc.free(block)
    held = anonymous_mib()
    release_freed_memory()
    returned = held - anonymous_mib()
    for block in blocks[1::2]:
        libc.free(block)
    assert returned > 0.5 * size * count / 2 / 2**20


def test_training_steps_tile_every_large_graph_and_order_spots_without_positions():
    from spahgc_kedro.model.training import training_steps

    small, large = make_graph(n=10, seed=1), make_graph(n=30, seed=2)
    steps = training_steps([large, small, large], 12)
    # graph by graph: the large one in tiles, the small one whole, the large one again in the same tiles
    assert [i for i, _ in steps] == sorted(i for i, _ in steps) and (1, None) in steps
    first, again = ([t.tolist() for i, t in steps if i == index] for index in (0, 2))
    assert first == again and len(first) > 1
    assert sorted(sum(first, [])) == list(range(30)) and all(len(t) <= 12 for t in first)
    # one spot per tile is allowed
    assert [len(t) for _, t in training_steps([small], 1)] == [1] * 10
    # without pixel positions, tiles are runs of the spot order
    del large["target"].pos
    tiles = [t.tolist() for _, t in training_steps([large], 10)]
    assert sum(tiles, []) == list(range(30)) and all(len(t) <= 10 for t in tiles)


def test_chunk_masks_partition_the_nodes_into_contiguous_near_equal_runs():
    from spahgc_kedro.model.training import _chunk_mask

    masks = [_chunk_mask(10, 3, chunk, torch.device("cpu")) for chunk in range(3)]
    assert [m.nonzero().flatten().tolist() for m in masks] == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9]]
    assert all(m.dtype == torch.bool for m in masks)


def test_contrastive_settings_reach_the_optimisation():
    """The masked contrastive term, its predictor, the teacher's decay and the weight decay each change the fit."""
    train, validation = [make_graph(seed=1)], [make_graph(seed=3)]
    reference = fit(train, validation, tiny_config(), progress=False)
    assert same_weights(reference.state_dict, fit(train, validation, tiny_config(), progress=False).state_dict)
    for changed in (
        {"use_contrastive": False},
        {"use_predictor": False},
        {"ema_decay": 0.5},
        {"weight_decay": 0.5},
    ):
        assert not same_weights(
            reference.state_dict, fit(train, validation, tiny_config(**changed), progress=False).state_dict
        ), changed


def test_step_order_comes_from_the_seed_not_torchs_global_generator():
    train, validation = [make_graph(seed=s) for s in (1, 2, 4, 6)], [make_graph(seed=3)]
    torch.manual_seed(1)
    first = fit(train, validation, tiny_config(use_contrastive=False), progress=False)
    torch.manual_seed(2)
    again = fit(train, validation, tiny_config(use_contrastive=False), progress=False)
    assert same_weights(first.state_dict, again.state_dict)


def test_epoch_losses_are_the_mean_over_the_steps():
    """With lr 0 and nothing random (no masks, no dropout) every step on the same graph has the same loss: the mean
    is that loss."""
    graph, validation = make_graph(seed=1), [make_graph(seed=3)]
    model = ModelConfig(hidden=16, n_layers=1, heads=2, dropout=0.0, attention_dropout=0.0)
    config = tiny_config(
        lr=0.0, weight_decay=0.0, use_contrastive=False, mask_target=0.0, mask_reference=0.0, model=model
    )
    once = fit([graph], validation, config, progress=False).history[0]
    thrice = fit([graph, graph, graph], validation, config, progress=False).history[0]
    assert thrice["train_loss"] == pytest.approx(once["train_loss"], rel=1e-6)
