"""The graph module's small contracts, each against a hand-made answer: fold-plan keys, dtypes, presets."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from spahgc_kedro.graph import fold_plan_key, graph_from_parts, graph_preset, reference_links, standardisation


def test_fold_plan_key_is_the_sha256_of_the_sorted_plan_with_missing_roles_empty():
    plan = {"validation": ["B"], "test": ["A"], "train": ["C", "D"]}
    by_hand = json.dumps({"test": ["A"], "train": ["C", "D"], "validation": ["B"]})
    assert fold_plan_key(plan) == hashlib.sha256(by_hand.encode()).hexdigest()[:16]
    # a plan without validation is the plan with an empty one; extra keys (ensemble names) do not count
    no_validation = json.dumps({"test": ["A"], "train": ["C", "D"], "validation": []})
    expected = hashlib.sha256(no_validation.encode()).hexdigest()[:16]
    assert fold_plan_key({"test": ["A"], "train": ["C", "D"], "ensemble": "A"}) == expected


def parts(n_spots: int = 3, k_refer: int = 2):
    """Float64 features and int32 links: graph_from_parts must cast them to the contract's dtypes."""
    links = {
        "section_index": np.array([0, 0, 1], dtype=np.int32),
        "spot_index": np.array([4, 1, 0], dtype=np.int32),
        "refer_source": np.array([[0, 1], [1, 2], [2, 0]], dtype=np.int32),
        "close_edges": np.array([[1, 2], [0, 1]], dtype=np.int32),
    }
    return {
        "target_x": np.arange(n_spots * 4, dtype=np.float64).reshape(n_spots, 4),
        "target_y": np.ones((n_spots, 2), dtype=np.float64),
        "target_pos": np.arange(n_spots * 2, dtype=np.int64).reshape(n_spots, 2),
        "near_edges": np.array([[0, 1], [1, 0]], dtype=np.int32),
        "reference_features": np.zeros((3, 6), dtype=np.float64),
        "links": links,
        "attributes": {"section_id": "S"},
    }


def test_graph_from_parts_casts_to_the_contract_dtypes_and_lists_refer_edges_by_target():
    graph = graph_from_parts(**parts())
    for node_type, name in (("target", "x"), ("target", "y"), ("target", "pos"), ("reference", "x")):
        assert graph[node_type][name].dtype == torch.float32, (node_type, name)
    assert graph["reference"].section_index.dtype == graph["reference"].spot_index.dtype == torch.int64
    for edge_type in graph.edge_types:
        assert graph[edge_type].edge_index.dtype == torch.int64, edge_type
    refer = graph["reference", "refer", "target"].edge_index
    assert refer.tolist() == [[0, 1, 1, 2, 2, 0], [0, 0, 1, 1, 2, 2]]


def test_graph_from_parts_refuses_an_edge_to_a_node_that_does_not_exist():
    broken = parts()
    broken["near_edges"] = np.array([[0, 5], [1, 0]])
    with pytest.raises(ValueError):
        graph_from_parts(**broken)


def test_reference_links_keep_one_close_neighbour_and_the_index_dtypes():
    neighbour_section = np.array([[0, 1], [1, 0]])
    neighbour_spot = np.array([[0, 1], [1, 2]])
    reference_x = [np.array([[0.0], [10.0], [11.0]]), np.array([[1.0], [12.0]])]
    links, features = reference_links(neighbour_section, neighbour_spot, reference_x, 1, "l1", 4)
    # references (section, spot): (0,0)=0.0, (0,2)=11.0, (1,1)=12.0; each one's nearest other by L1
    assert features[:, 0].tolist() == [0.0, 11.0, 12.0]
    assert links["close_edges"].tolist() == [[1, 2, 1], [0, 1, 2]]
    for name in ("section_index", "spot_index", "refer_source", "close_edges"):
        assert links[name].dtype == np.int64, name
    none_close, _ = reference_links(neighbour_section, neighbour_spot, reference_x, 0, "l1", 4)
    assert none_close["close_edges"].shape == (2, 0) and none_close["close_edges"].dtype == np.int64


def test_graph_preset_takes_the_run_parameters_only_for_the_manifests_dataset():
    manifest = {"dataset": "her2st", "preset": {"gene_panel": {"rule": "list"}, "spatial_radius_spacings": 1.2}}
    live = {"her2st": {"spatial_radius_spacings": 2.0}, "other": {"spatial_radius_spacings": 9.0}}
    assert graph_preset(manifest, live, "her2st")["spatial_radius_spacings"] == 2.0
    # parameters of another dataset never leak into this manifest's preset
    assert graph_preset(manifest, live, "other")["spatial_radius_spacings"] == 1.2
    # a dataset the parameters do not list keeps the manifest's preset
    assert graph_preset(manifest, {}, "her2st") == manifest["preset"]
    # an older manifest without a preset takes everything from the parameters
    full = {"her2st": {"gene_panel": {"rule": "list"}, "spatial_radius_spacings": 1.5}}
    assert graph_preset({"dataset": "her2st"}, full, "her2st") == full["her2st"]
    with pytest.raises(ValueError) as missing:
        graph_preset({"dataset": "her2st"}, {}, "her2st")
    assert str(missing.value) == (
        "No 'gene_panel' for dataset 'her2st' in the section manifest or in parameters datasets: "
        "re-run the ingestion pipeline."
    )


def test_nearest_neighbours_default_to_exact_l1_against_scipy():
    from scipy.spatial.distance import cdist

    from spahgc_kedro.graph import nearest_neighbours

    rng = np.random.default_rng(1)
    queries, candidates = rng.normal(size=(9, 5)), rng.normal(size=(13, 5))
    distances, indices = nearest_neighbours(queries, candidates, 4)
    expected = cdist(queries, candidates, metric="cityblock")
    np.testing.assert_array_equal(indices, np.argsort(expected, axis=1, kind="stable")[:, :4])
    np.testing.assert_allclose(distances, np.sort(expected, axis=1)[:, :4])
    assert distances.dtype == np.float64 and indices.dtype == np.int64


def test_excluding_self_leaves_one_candidate_fewer():
    from spahgc_kedro.graph import nearest_neighbours

    points = np.arange(12.0).reshape(4, 3)
    _, indices = nearest_neighbours(points, points, 3, exclude_self=True)
    assert not (indices == np.arange(4)[:, None]).any()
    with pytest.raises(ValueError, match="Cannot retrieve 4 neighbours among 3 candidates"):
        nearest_neighbours(points, points, 4, exclude_self=True)


def test_pair_neighbours_cap_k_at_the_candidate_spots_not_the_width():
    from spahgc_kedro.graph import pair_neighbours

    rng = np.random.default_rng(2)
    # 2-d features, 5 and 3 spots: k = 4 is capped at 3 for the 3-spot section only
    embeddings = {"A": rng.normal(size=(5, 2)), "B": rng.normal(size=(3, 2))}
    found = pair_neighbours(embeddings, [("A", "B"), ("B", "A")], 4, "l1", 2)
    assert found[("A", "B")][1].shape == (5, 3) and found[("B", "A")][1].shape == (3, 4)


def test_merging_too_few_candidates_says_what_to_change():
    from spahgc_kedro.graph import merge_section_neighbours

    one = (np.zeros((2, 2)), np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueError) as few:
        merge_section_neighbours([one, one], 5)
    assert str(few.value) == (
        "Only 4 candidate spots for k_refer=5: lower graph.k_refer or use more training sections."
    )


def test_unit_rows_scale_each_row_to_norm_one_and_leave_zero_rows_zero():
    from spahgc_kedro.graph import _unit_rows

    values = np.zeros((64, 3))
    values[::2] = [3.0, 0.0, 4.0]
    with np.errstate(all="raise"):  # a 0/0 anywhere fails
        unit = _unit_rows(values)
    np.testing.assert_array_equal(unit[::2], np.tile([0.6, 0.0, 0.8], (32, 1)))
    np.testing.assert_array_equal(unit[1::2], np.zeros((32, 3)))


no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="asks for a GPU to get the no-GPU message")


def hand_made_section_graph(**device):
    """Two target spots 1 px apart, each retrieving two of three reference spots (features 0, 11 and 12)."""
    from spahgc_kedro.graph import assemble_section_graph

    return assemble_section_graph(
        target_x=np.ones((2, 1)),
        target_y=None,
        target_pos=np.array([[0.0, 0.0], [1.0, 0.0]]),
        spatial_radius=1.5,
        max_spatial_neighbours=6,
        neighbour_section=np.array([[0, 1], [1, 0]]),
        neighbour_spot=np.array([[0, 1], [1, 2]]),
        reference_x=[np.array([[0.0], [10.0], [11.0]]), np.array([[1.0], [12.0]])],
        k_close=1,
        metric="l1",
        block_size=4,
        attributes={"section_id": "S"},
        **device,
    )


@no_gpu
def test_a_section_graph_runs_its_close_reference_search_where_asked():
    graph = hand_made_section_graph()
    assert graph["reference"].x[:, 0].tolist() == [0.0, 11.0, 12.0]
    assert graph["reference", "close", "reference"].edge_index.tolist() == [[1, 2, 1], [0, 1, 2]]
    assert sorted(map(tuple, graph["target", "near", "target"].edge_index.T.tolist())) == [(0, 1), (1, 0)]
    with pytest.raises(ValueError, match="retrieval_device is 'cuda' but torch .* sees no CUDA GPU"):
        hand_made_section_graph(retrieval_device="cuda")


@no_gpu
def test_the_retrieval_device_parameter_reaches_the_graph_of_each_section(tiny, graph_params):
    from tests.helpers.tiny_sections import tiny_fold_references, tiny_graphs

    sections = tiny[0]
    folds, scaling, _ = tiny_graphs(tiny, graph_params)
    name = sorted(folds["folds"])[0]
    references, raw = tiny_fold_references(tiny, folds, scaling, graph_params, name)
    section_id = folds["folds"][name]["test"][0]
    section = sections[section_id]

    def build():
        positions = np.asarray(section.obsm["spatial"])
        return references.build(section_id, raw[section_id], positions, 1e9, list(section.obs_names), "test")

    assert build()["reference", "close", "reference"].edge_index.shape[1] > 0
    references.params = {**graph_params, "retrieval_device": "cuda"}
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        build()


def test_standardisation_is_the_stacked_mean_and_std_with_constant_dimensions_left_unscaled():
    first = np.array([[1.0, 5.0, 2.0], [3.0, 5.0, 2.0]], dtype=np.float32)
    second = np.array([[8.0, 5.0, 2.0]], dtype=np.float32)
    mean, std = standardisation([first, second])
    assert mean.dtype == std.dtype == np.float32
    np.testing.assert_allclose(mean, [4.0, 5.0, 2.0], rtol=1e-7)
    np.testing.assert_allclose(std, [np.sqrt(((1 - 4) ** 2 + (3 - 4) ** 2 + (8 - 4) ** 2) / 3), 1.0, 1.0], rtol=1e-6)


def test_standardisation_sums_in_float64_so_a_large_offset_does_not_swamp_the_spread():
    # float32 running sums of 4,096 values near 1e4 miss the mean by ~2e-4, which inflates a 0.01 spread by ~2e-4
    values = np.random.default_rng(5).normal(1e4, 0.01, size=(4096, 3)).astype(np.float32)
    _, std = standardisation([values])
    np.testing.assert_allclose(std, values.astype(np.float64).std(axis=0), rtol=1e-5)


def test_standardisation_in_blocks_matches_numpy_over_the_stacked_sections():
    rng = np.random.default_rng(3)
    sections = [rng.normal(2.0, 3.0, size=(n, 5)).astype(np.float32) for n in (7, 1, 12)]
    sections[1][:, 4] = sections[0][:, 4] = sections[2][:, 4] = 1.5  # a constant dimension
    stacked = np.concatenate(sections).astype(np.float64)
    for block in (1, 3, 5, 100):
        mean, std = standardisation(sections, block=block)
        np.testing.assert_allclose(mean, stacked.mean(axis=0), rtol=1e-6)
        np.testing.assert_allclose(std[:4], stacked.std(axis=0)[:4], rtol=1e-6)
        assert std[4] == 1.0


def test_reference_rows_give_the_rows_of_the_whole_sections_features(monkeypatch):
    from spahgc_kedro import graph
    from spahgc_kedro.graph import ReferenceRows, reference_links

    rng = np.random.default_rng(4)
    mean, std = np.float32([0.5, -1.0, 2.0]), np.float32([2.0, 0.5, 1.5])
    raw = [rng.normal(size=(n, 3)).astype(np.float32) for n in (6, 4)]
    targets = [rng.random((n, 2), dtype=np.float32) for n in (6, 4)]
    whole = [np.hstack([(x - mean) / std, y]) for x, y in zip(raw, targets, strict=True)]
    lazy = [ReferenceRows(x, y, lambda values: (values - mean) / std) for x, y in zip(raw, targets, strict=True)]
    assert [r.shape for r in lazy] == [(6, 5), (4, 5)]
    assert np.array_equal(lazy[0][np.array([5, 0, 2])], whole[0][[5, 0, 2]])
    section = np.array([[1, 0], [0, 0], [1, 1]])
    spot = np.array([[3, 5], [5, 1], [0, 3]])
    expected_links, expected = reference_links(section, spot, whole, 2, "l1", 2)
    for block_rows in (graph.FEATURE_BLOCK_ROWS, 1):  # rows filled in blocks, blocks ending mid-section
        monkeypatch.setattr(graph, "FEATURE_BLOCK_ROWS", block_rows)
        links, features = reference_links(section, spot, lazy, 2, "l1", 2)
        assert features.dtype == np.float32 and np.array_equal(features, expected)
        assert all(np.array_equal(links[key], expected_links[key]) for key in expected_links)


def tiny_folds_and_scaling(tiny, params):
    """The tiny sections' fold plan and each fold's target scaling, by the graph nodes."""
    from spahgc_kedro.pipelines.graph.nodes import fit_target_scaling, make_fold_plan
    from tests.helpers.tiny_sections import as_partitions

    sections, _, manifest = tiny
    folds = make_fold_plan(manifest, params)
    return folds, fit_target_scaling(as_partitions(sections), manifest, folds, manifest["preset"], params)


def test_fold_references_read_and_fill_the_callers_retrieval_cache(tiny, graph_params):
    """The graph pipeline retrieves each section pair once for every fold: a pair in the cache is not retrieved
    again, and a new pair's neighbours are left in it for the next fold."""
    from spahgc_kedro.graph import aligned_embedding
    from tests.helpers.tiny_sections import tiny_fold_references

    sections, embeddings, _ = tiny
    folds, scaling = tiny_folds_and_scaling(tiny, graph_params)
    name, fold = next(iter(folds["folds"].items()))
    query, k = fold["test"][0], graph_params["k_refer"]
    spots = len(aligned_embedding(sections[query], embeddings[query], query))
    # every query spot's cached neighbours: spot 0 of each training section, at distance 0
    cache = {(query, c): (np.zeros((spots, k)), np.zeros((spots, k), dtype=np.int64)) for c in fold["train"]}
    references, raw = tiny_fold_references(tiny, folds, scaling, graph_params, name, cache)
    _, _, spot = references.retrieve(query, raw[query])
    assert (spot == 0).all()
    other = fold["train"][0]
    references.retrieve(other, raw[other])
    assert {(other, c) for c in fold["train"] if c != other} <= set(cache)


def test_aligned_embeddings_follow_the_spot_order_as_float32_and_stale_ones_are_counted():
    import anndata as ad
    import pandas as pd

    from spahgc_kedro.graph import aligned_embedding

    section = ad.AnnData(obs=pd.DataFrame(index=["a", "b", "c"]))
    embedding = ad.AnnData(X=np.array([[3.0], [1.0], [2.0]], dtype=np.float64))
    embedding.obs_names = ["c", "a", "b"]
    aligned = aligned_embedding(section, embedding, "S1")
    assert aligned.dtype == np.float32
    np.testing.assert_array_equal(aligned, [[1.0], [2.0], [3.0]])
    stale = ad.AnnData(X=np.zeros((2, 1), dtype=np.float32))
    stale.obs_names = ["a", "z"]
    message = (
        "Section S1: patch embeddings do not match its spots (2 spots without an embedding, 1 embeddings of "
        "unknown spots). The embeddings are stale: re-run the embedding pipeline (kedro run --pipeline=embedding)."
    )
    with pytest.raises(ValueError) as error:
        aligned_embedding(section, stale, "S1")
    assert str(error.value) == message


def test_retrieval_pairs_are_every_section_of_a_fold_against_each_other_training_section():
    from spahgc_kedro.graph import retrieval_pairs

    folds = {
        "folds": {
            "A": {"train": ["B", "C"], "validation": ["D"], "test": ["A"]},
            "B": {"train": ["A", "C"], "validation": ["D"], "test": ["B"]},
        }
    }
    expected = [
        ("B", "C"),
        ("C", "B"),
        ("D", "B"),
        ("D", "C"),
        ("A", "B"),
        ("A", "C"),
        ("C", "A"),
        ("A", "C"),
        ("D", "A"),
        ("B", "A"),
    ]
    assert retrieval_pairs(folds) == list(dict.fromkeys(expected))


def test_links_of_a_section_outside_the_cache_retrieve_from_its_own_embeddings(tiny, graph_params):
    """The predict pipeline's path: a new section's links come from its own embeddings, not from a cache."""
    from spahgc_kedro.graph import nearest_neighbours
    from tests.helpers.tiny_sections import tiny_fold_references

    folds, scaling = tiny_folds_and_scaling(tiny, graph_params)
    name = next(iter(folds["folds"]))
    references, raw = tiny_fold_references(tiny, folds, scaling, graph_params, name)
    query = folds["folds"][name]["test"][0]
    assert not any(pair[0] == query for pair in references.neighbours)
    references.links(query, raw[query])
    for candidate in references.sections:
        distances, spots = references.neighbours[(query, candidate)]
        k = min(graph_params["k_refer"], len(raw[candidate]))
        expected = nearest_neighbours(raw[query], raw[candidate], k, graph_params["metric"])
        np.testing.assert_array_equal(spots, expected[1])


@no_gpu
def test_a_pair_outside_the_retrieval_cache_is_searched_on_the_retrieval_device(tiny, graph_params):
    """`retrieve` itself honours `retrieval_device` (here refused: no GPU), not only the reference kNN after it."""
    from tests.helpers.tiny_sections import tiny_fold_references

    folds, scaling = tiny_folds_and_scaling(tiny, graph_params)
    name = next(iter(folds["folds"]))
    on_gpu = {**graph_params, "retrieval_device": "cuda"}
    references, raw = tiny_fold_references(tiny, folds, scaling, on_gpu, name)
    query = folds["folds"][name]["test"][0]
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        references.retrieve(query, raw[query])
    assert not references.neighbours


def test_a_reference_section_smaller_than_k_refer_gives_all_its_spots(tiny, graph_params):
    """k_refer caps at a candidate section's spot count (not its embedding width), so a small section still counts."""
    from spahgc_kedro.graph import nearest_neighbours
    from tests.helpers.tiny_sections import tiny_fold_references

    folds, scaling = tiny_folds_and_scaling(tiny, graph_params)
    name = next(iter(folds["folds"]))
    references, raw = tiny_fold_references(tiny, folds, scaling, graph_params, name)
    query, small = folds["folds"][name]["test"][0], references.sections[0]
    # 4 spots, fewer than k_refer (7) and than the embedding width (8)
    references.raw[small] = raw[small][:4]
    references.retrieve(query, raw[query])
    _, spots = references.neighbours[(query, small)]
    np.testing.assert_array_equal(spots, nearest_neighbours(raw[query], raw[small][:4], 4, graph_params["metric"])[1])
