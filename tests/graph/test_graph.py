"""Retrieval, spatial edges and per-section graphs on tiny generated sections."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from spahgc_kedro.graph import merge_section_neighbours, nearest_neighbours, spatial_edges
from spahgc_kedro.pipelines.graph.nodes import build_section_graphs, fit_target_scaling, make_fold_plan
from tests.helpers.partitions import as_partitions
from tests.helpers.retrieval import brute_force, built_graphs
from tests.helpers.tiny_sections import DIM, GRID, SECTIONS


@pytest.mark.parametrize("metric", ["l1", "cosine"])
def test_blocked_retrieval_equals_brute_force(metric):
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(70, 5)).astype(np.float32)
    candidates = rng.normal(size=(130, 5)).astype(np.float32)
    expected_d, expected_i = brute_force(queries, candidates, 7, metric)
    for block in (8, 33, 1000):
        d, i = nearest_neighbours(queries, candidates, 7, metric, block_size=block)
        np.testing.assert_array_equal(i, expected_i)
        np.testing.assert_allclose(d, expected_d, atol=1e-9)


def test_retrieval_ties_break_on_the_lower_index():
    rng = np.random.default_rng(1)
    # Few distinct values: many exact ties, which must not depend on the blocking.
    queries = rng.integers(0, 3, size=(40, 3)).astype(np.float32)
    candidates = rng.integers(0, 3, size=(90, 3)).astype(np.float32)
    _, expected = brute_force(queries, candidates, 7, "l1")
    for block in (4, 7, 50):
        np.testing.assert_array_equal(nearest_neighbours(queries, candidates, 7, "l1", block)[1], expected)
    _, without_self = nearest_neighbours(candidates, candidates, 3, "l1", 16, exclude_self=True)
    assert (without_self != np.arange(90)[:, None]).all()


def test_merge_of_per_section_neighbours_equals_global_search():
    rng = np.random.default_rng(2)
    queries = rng.normal(size=(30, 4))
    parts = [rng.normal(size=(n, 4)) for n in (20, 3, 25)]
    merged_d, section, spot = merge_section_neighbours(
        [nearest_neighbours(queries, p, min(7, len(p)), "l1") for p in parts], 7
    )
    global_d, global_i = brute_force(queries, np.vstack(parts), 7, "l1")
    offsets = np.cumsum([0, 20, 3])
    np.testing.assert_array_equal(offsets[section] + spot, global_i)
    np.testing.assert_allclose(merged_d, global_d)


def test_retrieval_memory_stays_bounded():
    rng = np.random.default_rng(3)
    queries = rng.normal(size=(1500, 64)).astype(np.float32)
    candidates = rng.normal(size=(8000, 64)).astype(np.float32)
    tracemalloc.start()
    nearest_neighbours(queries, candidates, 7, "l1", block_size=256)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # A full distance matrix would take 1500 x 8000 x 8 B = 96 MB; tiles take ~0.5 MB each.
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_spatial_edges_on_a_square_grid():
    cols, rows = np.meshgrid(np.arange(5), np.arange(5))
    positions = np.c_[cols.ravel(), rows.ravel()] * 100.0
    edges = spatial_edges(positions, radius=150.0, max_neighbours=5)
    centre = 12  # (2, 2): 4 side neighbours at 100 px, 4 diagonals at 141 px
    assert edges[0, edges[1] == centre].tolist() == [7, 11, 13, 17, 6]
    corner = edges[0, edges[1] == 0].tolist()
    assert corner == [1, 5, 6]
    assert (edges[0] != edges[1]).all()
    only_sides = spatial_edges(positions, radius=110.0, max_neighbours=5)
    assert sorted(only_sides[0, only_sides[1] == centre].tolist()) == [7, 11, 13, 17]
    assert only_sides.shape[1] == 2 * 2 * 5 * 4  # 2 directions x 40 grid links


def test_section_graphs(tiny, graph_params):
    folds, scaling, graphs = built_graphs(tiny, graph_params, fold="S5")
    fold = folds["folds"]["S5"]
    assert fold == {"test": ["S5"], "validation": ["S1"], "train": ["S2", "S3", "S4"]}
    assert sorted(graphs) == [f"S5/{s}" for s, _ in SECTIONS]
    n_genes = len(scaling["S5"]["genes"])
    test_y = graphs["S5/S5"]["target"].y
    for key, data in graphs.items():
        section_id = key.split("/")[1]
        n = GRID * GRID
        assert data.section_id == section_id and data.fold == "S5"
        assert data.role == {"S5": "test", "S1": "validation"}.get(section_id, "train")
        assert data.genes == scaling["S5"]["genes"] and len(data.spot_ids) == n
        assert data["target"].x.shape == (n, DIM) and data["target"].y.shape == (n, n_genes)
        assert data["target"].pos.shape == (n, 2)
        # Reference spots come only from the training sections, never the graph's own.
        allowed = [s for s in fold["train"] if s != section_id]
        assert data.reference_sections == allowed
        assert set(data["reference"].section_index.tolist()) <= set(range(len(allowed)))
        refs = data["reference"].x
        assert refs.shape[1] == DIM + n_genes and data.embedding_dim == DIM
        # Exactly k_refer distinct incoming refer edges per target spot.
        refer = data["reference", "refer", "target"].edge_index
        assert torch.bincount(refer[1], minlength=n).tolist() == [7] * n
        assert all(len(set(refer[0, refer[1] == t].tolist())) == 7 for t in range(n))
        assert refs.shape[0] == len(torch.unique(refer[0]))  # de-duplicated and all used
        close = data["reference", "close", "reference"].edge_index
        assert torch.bincount(close[1]).tolist() == [3] * refs.shape[0]
        assert (close[0] != close[1]).all()
        near = data["target", "near", "target"].edge_index
        assert near.shape[1] > 0 and (near[0] != near[1]).all()
        assert torch.bincount(near[1], minlength=n).max() <= 5
        # No test-section expression among the reference features: S5's values all exceed 1.
        expression = refs[:, DIM:]
        assert expression.max() <= 1.0 + 1e-6
        assert not np.isin(expression.numpy(), test_y.numpy()).any()
        data.validate()


def test_reference_features_are_the_training_spots(tiny, graph_params):
    sections, embeddings, _ = tiny
    _, scaling, graphs = built_graphs(tiny, graph_params, fold="S5")
    data = graphs["S5/S5"]
    genes = scaling["S5"]["genes"]
    for row, (s, spot) in enumerate(zip(data["reference"].section_index, data["reference"].spot_index, strict=True)):
        section = sections[data.reference_sections[int(s)]]
        counts = section[int(spot), genes].X.toarray().ravel()
        expected = (np.log10(counts + 1) - np.array(scaling["S5"]["min"])) / (
            np.array(scaling["S5"]["max"]) - np.array(scaling["S5"]["min"])
        )
        np.testing.assert_allclose(data["reference"].x[row, DIM:].numpy(), expected, atol=1e-5)
    # Refer edges point at the spots nearest in raw embedding space (L1), nearest first.
    train = np.vstack([embeddings[s].X for s in data.reference_sections])
    _, expected = brute_force(embeddings["S5"].X, train, 7, "l1")
    offsets = np.cumsum([0] + [embeddings[s].n_obs for s in data.reference_sections])
    refer = data["reference", "refer", "target"].edge_index[0].view(-1, 7).numpy()
    global_index = offsets[data["reference"].section_index.numpy()] + data["reference"].spot_index.numpy()
    np.testing.assert_array_equal(global_index[refer], expected)


def test_graphs_are_deterministic(tiny, graph_params):
    _, _, first = built_graphs(tiny, graph_params, fold="S2", metric="cosine")
    _, _, second = built_graphs(tiny, graph_params, fold="S2", metric="cosine", block_size=5)
    for key in first:
        a, b = first[key].to_dict(), second[key].to_dict()
        assert a.keys() == b.keys()
        for name in a:
            if isinstance(a[name], dict):
                for attr, value in a[name].items():
                    same = torch.equal(value, b[name][attr]) if torch.is_tensor(value) else value == b[name][attr]
                    assert same, (key, name, attr)
            else:
                assert a[name] == b[name]


def test_patient_folds_built_graphs(tiny, graph_params):
    folds, _, graphs = built_graphs(tiny, graph_params, fold_scheme="leave_one_patient_out", fold="A")
    assert folds["folds"]["A"]["test"] == ["S1", "S2"]
    assert graphs["A/S1"].role == graphs["A/S2"].role == "test"
    assert graphs["A/S1"].reference_sections == folds["folds"]["A"]["train"]


def test_misaligned_embeddings_fail_clearly(tiny, graph_params):
    sections, embeddings, manifest = tiny
    shuffled = embeddings["S3"][::-1].copy()
    stale = embeddings["S4"][:-1].copy()
    folds = make_fold_plan(manifest, {**graph_params, "fold": "S5"})
    preset = manifest["preset"]
    scaling = fit_target_scaling(as_partitions(sections), manifest, folds, preset, graph_params)
    # Reordered embeddings are realigned by spot id, giving the same graphs.
    reordered = build_section_graphs(
        as_partitions(sections),
        as_partitions(dict(embeddings, S3=shuffled)),
        manifest,
        folds,
        scaling,
        preset,
        graph_params,
    )
    original = build_section_graphs(
        as_partitions(sections), as_partitions(embeddings), manifest, folds, scaling, preset, graph_params
    )
    assert torch.equal(reordered["S5/S3"]()["target"].x, original["S5/S3"]()["target"].x)
    with pytest.raises(ValueError, match="re-run the embedding pipeline"):
        build_section_graphs(
            as_partitions(sections),
            as_partitions(dict(embeddings, S4=stale)),
            manifest,
            folds,
            scaling,
            preset,
            graph_params,
        )


def test_the_graph_stage_holds_each_sections_embeddings_as_a_mapped_file(tiny, graph_params):
    import mmap

    from spahgc_kedro.graph import aligned_embedding
    from tests.helpers.tiny_sections import tiny_graphs

    sections, embeddings, _ = tiny
    _, _, graphs = tiny_graphs(tiny, graph_params)
    for section_id in sections:
        held = owner = graphs.section(section_id)["embedding"]
        while isinstance(owner, np.ndarray | memoryview):
            owner = owner.obj if isinstance(owner, memoryview) else owner.base
        assert isinstance(owner, mmap.mmap), section_id
        np.testing.assert_array_equal(held, aligned_embedding(sections[section_id], embeddings[section_id], section_id))
