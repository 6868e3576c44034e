"""The section graph store: graphs read back equal the graphs built directly, each section stored once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kedro.io import DatasetError

from spahgc_kedro.datasets import SectionGraphStore
from spahgc_kedro.graph import fold_plan_key
from tests.helpers.tiny_sections import tiny_fold_references, tiny_graphs

ATTRIBUTES = ("section_id", "fold", "role", "genes", "spot_ids", "reference_sections", "embedding_dim", "fold_plan")


def assert_same_graph(actual, expected) -> None:
    """Every node and edge tensor bit-identical (values and dtypes) and every graph attribute equal."""
    assert actual.node_types == expected.node_types and actual.edge_types == expected.edge_types
    for store in expected.node_types + expected.edge_types:
        assert set(actual[store].keys()) == set(expected[store].keys()), store
        for key, value in expected[store].items():
            assert actual[store][key].dtype == value.dtype, (store, key)
            assert torch.equal(actual[store][key], value), (store, key)
    for name in ATTRIBUTES:
        assert (name in actual) == (name in expected), name
        assert getattr(actual, name, None) == getattr(expected, name, None), name
    assert torch.equal(actual.embedding_mean, expected.embedding_mean)
    assert torch.equal(actual.embedding_std, expected.embedding_std)


def direct_graph(tiny, folds, scaling, params, name: str, section_id: str, role: str):
    """The graph built in one go by `FoldReferences.build` (the predict pipeline's path), without the store."""
    sections = tiny[0]
    references, raw = tiny_fold_references(tiny, folds, scaling, params, name)
    section = sections[section_id]
    radius = 1.5 * float(section.uns["spot_spacing_px"])
    graph = references.build(
        section_id,
        raw[section_id],
        np.asarray(section.obsm["spatial"], dtype=np.float64),
        radius,
        list(section.obs_names),
        role,
        target_y=references.targets(section_id),
    )
    graph.fold_plan = fold_plan_key(folds["folds"][name])
    return graph


@pytest.fixture
def stored(tmp_path, tiny, graph_params):
    folds, scaling, graphs = tiny_graphs(tiny, graph_params)
    store = SectionGraphStore(path=str(tmp_path / "section_graphs"))
    store.save(graphs)
    return folds, scaling, graphs, store


def test_graphs_read_from_the_store_equal_the_graphs_built_directly(tiny, graph_params, stored):
    folds, scaling, built, store = stored
    assert tiny[2]["preset"]["spatial_radius_spacings"] == 1.5
    loaded = store.load()
    assert sorted(loaded) == sorted(built)
    assert len(loaded) == sum(len(f[r]) for f in folds["folds"].values() for r in ("train", "validation", "test"))
    for key in sorted(loaded):
        name, section_id = key.split("/")
        graph = loaded[key]()
        assert_same_graph(graph, built[key]())
        assert_same_graph(graph, direct_graph(tiny, folds, scaling, graph_params, name, section_id, graph.role))


def test_target_arrays_skip_the_references_and_equal_the_graphs_own(stored):
    from spahgc_kedro.graph import raw_embeddings
    from spahgc_kedro.graph_store import section_targets

    _, _, built, store = stored
    loaded = store.load()
    for key in sorted(loaded):
        graph = built[key]()
        for source in (loaded, built, dict(built)):
            raw, targets = section_targets(source, key)
            assert np.array_equal(raw, raw_embeddings(graph)) and raw.dtype == np.float32
            assert np.array_equal(targets, graph["target"].y.numpy()) and targets.dtype == np.float32


def test_the_store_keeps_each_section_once_and_no_features_per_fold(tiny, stored):
    folds, _, _, store = stored
    root = store._path
    assert sorted(p.name for p in (root / "sections").iterdir()) == sorted(tiny[0])
    assert sorted(p.name for p in (root / "folds").iterdir()) == sorted(folds["folds"])
    for links in (root / "folds").rglob("*.npz"):
        with np.load(links) as arrays:
            kinds = {arrays[name].dtype.kind for name in arrays.files}
        # the standardisation is one row per fold; links are indices only, never features
        assert kinds <= ({"f"} if links.name == "standardisation.npz" else {"i", "U"}), links
    embedding = np.load(root / "sections" / "S1" / "embedding.npy")
    assert embedding.dtype == np.float32 and embedding.shape == (tiny[0]["S1"].n_obs, tiny[1]["S1"].n_vars)


def test_saving_again_replaces_the_store_only_once_complete(tmp_path, tiny, graph_params, stored):
    folds, _, graphs, store = stored
    before = {key: store.load()[key]() for key in sorted(graphs)}

    class Interrupted(RuntimeError):
        pass

    def failing_links(name, section_id):
        raise Interrupted

    graphs.links = failing_links
    with pytest.raises(DatasetError) as error:
        store.save(graphs)
    assert isinstance(error.value.__cause__, Interrupted)
    assert not list(tmp_path.glob("section_graphs.partial-*"))
    after = store.load()
    for key, graph in before.items():
        assert_same_graph(after[key](), graph)

    one_fold = {"scheme": folds["scheme"], "folds": {"S1": folds["folds"]["S1"]}}
    _, _, smaller = tiny_graphs(tiny, {**graph_params, "fold": "S1"})
    assert smaller.plans == one_fold["folds"]
    store.save(smaller)
    assert sorted(p.name for p in (store._path / "folds").iterdir()) == ["S1"]
    assert sorted(store.load()) == sorted(smaller)


def test_a_missing_or_older_store_names_the_folder_and_the_fix(tmp_path):
    missing = SectionGraphStore(path=str(tmp_path / "none"))
    assert not missing.exists()
    with pytest.raises(Exception, match=r"does not exist: run `kedro run --pipeline=graph`"):
        missing.load()
    older = tmp_path / "older"
    (older / "S1").mkdir(parents=True)
    (older / "S1" / "S2.pt").write_bytes(b"")
    with pytest.raises(Exception, match=r"one \.pt file per graph, the layout of an older version") as error:
        SectionGraphStore(path=str(older)).load()
    assert str(older) in str(error.value)


def test_reference_links_by_hand():
    from scipy.spatial.distance import cdist

    from spahgc_kedro.graph import graph_from_parts, reference_links

    rng = np.random.default_rng(0)
    references = [rng.normal(size=(4, 3)), rng.normal(size=(5, 3))]
    # spot 0 retrieves (section 1, spot 2) twice over two targets, and (section 0, spot 3)
    section = np.array([[1, 0], [1, 1], [0, 0]])
    spot = np.array([[2, 3], [2, 0], [1, 3]])
    links, features = reference_links(section, spot, references, k_close=2, metric="l1", block_size=2)
    # de-duplicated in (section, spot) order: (0,1), (0,3), (1,0), (1,2)
    assert links["section_index"].tolist() == [0, 0, 1, 1] and links["spot_index"].tolist() == [1, 3, 0, 2]
    assert links["refer_source"].tolist() == [[3, 1], [3, 2], [0, 1]]
    expected = np.vstack([references[s][i] for s, i in [(0, 1), (0, 3), (1, 0), (1, 2)]]).astype(np.float32)
    assert np.array_equal(features, expected)
    distances = cdist(features, features, "cityblock")
    np.fill_diagonal(distances, np.inf)
    nearest = np.argsort(distances, axis=1, kind="stable")[:, :2]
    assert links["close_edges"].tolist() == [nearest.ravel().tolist(), np.repeat(np.arange(4), 2).tolist()]
    # as many close neighbours as there are other references, and none with one reference
    links, _ = reference_links(np.zeros((2, 1), int), np.zeros((2, 1), int), references, 5, "l1", 2)
    assert links["close_edges"].shape == (2, 0)
    links, _ = reference_links(section, spot, references, k_close=9, metric="l1", block_size=2)
    assert links["close_edges"].shape == (2, 4 * 3)

    graph = graph_from_parts(
        target_x=np.ones((3, 3)),
        target_y=None,
        target_pos=np.zeros((3, 2)),
        near_edges=np.array([[1, 0], [0, 1]]),
        reference_features=features,
        links=reference_links(section, spot, references, 2, "l1", 2)[0],
        attributes={"section_id": "T"},
    )
    assert "y" not in graph["target"] and graph.section_id == "T"
    assert graph["reference", "refer", "target"].edge_index.tolist() == [[3, 1, 3, 2, 0, 1], [0, 0, 1, 1, 2, 2]]
    assert graph["target", "near", "target"].edge_index.dtype == torch.int64


def test_fold_section_graphs_keys_order_and_shared_parts(tiny, graph_params):
    from spahgc_kedro.graph_store import fold_section_graphs, panel_union

    folds, scaling, graphs = tiny_graphs(tiny, graph_params)
    # fold by fold, each fold's sections by role: the store computes one fold's references at a time
    expected = [f"{n}/{s}" for n, f in folds["folds"].items() for r in ("train", "validation", "test") for s in f[r]]
    assert list(graphs) == expected and len(graphs) == len(expected)
    assert graphs.sections() == list(dict.fromkeys(key.split("/")[1] for key in expected))
    assert panel_union({"a": {"genes": ["g2", "g1"]}, "b": {"genes": ["g1", "g3"]}}) == ["g2", "g1", "g3"]
    assert graphs.genes == panel_union(scaling)
    mixed = {
        name: {**s, "transform": "log10_libsize" if i else s["transform"]}
        for i, (name, s) in enumerate(scaling.items())
    }
    with pytest.raises(ValueError, match=r"different transforms \['log10', 'log10_libsize'\]: re-run the graph stage"):
        fold_section_graphs(folds, mixed, {}, None, {}, {}, {}, {}, graph_params)


def small_train_config(**overrides):
    from spahgc_kedro.model.training import TrainConfig

    model = {"hidden": 16, "n_layers": 2, "heads": 2}
    return TrainConfig.from_params({"epochs": 3, "model": model, "seed": 3, "threads": 1, **overrides})


def test_a_stored_section_gives_the_tiles_of_the_assembled_graph(stored):
    from spahgc_kedro.model.training import spatial_tiles, tile_subgraph

    _, _, _, store = stored
    loaded = store.load()
    for key in sorted(loaded):
        graph, kept = loaded[key](), loaded.stored(key)
        assert kept.num_spots == graph["target"].num_nodes == loaded.num_spots(key)
        assert (kept.embedding_dim, kept.n_genes) == (graph.embedding_dim, len(graph.genes))
        for tile in spatial_tiles(graph["target"].pos, 10) + [torch.arange(graph["target"].num_nodes)]:
            actual, expected = kept.subgraph(tile), tile_subgraph(graph, tile)
            assert_same_graph(actual, expected)
            for node_type in ("target", "reference"):
                assert all(v.is_contiguous() for v in actual[node_type].values()), node_type
        assert torch.equal(kept.labelled()["target"].y, graph["target"].y)
        blocks = list(kept.input_blocks(7))
        assert torch.equal(torch.cat([b["target"] for b in blocks]), graph["target"].x)
        assert torch.equal(torch.cat([b["reference"] for b in blocks]), graph["reference"].x)


def test_labelling_a_stored_section_reads_its_expression_but_never_its_embeddings(stored, monkeypatch):
    _, _, _, store = stored
    loaded = store.load()
    key = sorted(loaded)[0]
    kept, expected = loaded.stored(key), loaded[key]()["target"].y
    kept.skeleton()
    section = loaded.section

    def without_embeddings(section_id: str) -> dict:
        # a section of 400,000 bins has 1.6 GB of embeddings: labels must not standardise them all
        return {name: values for name, values in section(section_id).items() if name != "embedding"}

    monkeypatch.setattr(loaded, "section", without_embeddings)
    assert torch.equal(kept.labelled()["target"].y, expected)


def test_a_stored_section_predicts_and_trains_as_the_assembled_graph(stored):
    from spahgc_kedro.model import SpaHGC
    from spahgc_kedro.model.training import fit, predict

    folds, _, _, store = stored
    loaded = store.load()
    fold = sorted(folds["folds"])[0]
    keys = {role: [f"{fold}/{s}" for s in folds["folds"][fold][role]] for role in ("train", "validation", "test")}
    test = loaded[keys["test"][0]]()
    model = SpaHGC(test["target"].x.shape[1], len(test.genes), hidden=16, n_layers=2, heads=2)
    whole = predict(model, test)
    for chunk in (0, 5, 13):
        np.testing.assert_allclose(predict(model, loaded.stored(keys["test"][0]), chunk_spots=chunk), whole, atol=1e-5)

    config = small_train_config(max_full_graph_spots=12)
    assembled = fit(
        [loaded[k]() for k in keys["train"]], [loaded[k]() for k in keys["validation"]], config, progress=False
    )
    kept = fit(
        [loaded.stored(k) for k in keys["train"]],
        [loaded.stored(k) for k in keys["validation"]],
        config,
        progress=False,
    )
    # the same tiles in the same memory layout: the same training, to the bit
    assert kept.best_epoch == assembled.best_epoch
    assert [row["train_loss"] for row in kept.history] == [row["train_loss"] for row in assembled.history]
    for row, expected in zip(kept.history, assembled.history, strict=True):
        assert row == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert all(torch.equal(kept.state_dict[name], value) for name, value in assembled.state_dict.items())


def test_the_training_key_of_a_stored_section_follows_its_features(tmp_path, stored):
    from spahgc_kedro.model.training import training_key

    folds, _, _, store = stored
    fold = sorted(folds["folds"])[0]
    train = [f"{fold}/{s}" for s in folds["folds"][fold]["train"]]
    config = small_train_config()
    key = training_key(config, [store.load().stored(k) for k in train], [])
    assert training_key(config, [store.load().stored(k) for k in train], []) == key
    # one embedding value of a reference section changed on disk: another key (no stale model reused)
    reference = store.load().stored(train[0]).skeleton().reference_sections[0]
    path = tmp_path / "section_graphs" / "sections" / reference / "embedding.npy"
    values = np.load(path)
    values[0, 0] += 1.0
    np.save(path, values)
    assert training_key(config, [store.load().stored(k) for k in train], []) != key


def test_large_sections_stay_in_the_store_for_training_and_prediction(stored):
    from spahgc_kedro.graph_store import StoredSectionGraph
    from spahgc_kedro.pipelines.train.nodes import graphs_by_role

    folds, _, built, store = stored
    loaded = store.load()
    fold = sorted(folds["folds"])[0]
    n_spots = loaded.num_spots(f"{fold}/{folds['folds'][fold]['train'][0]}")
    assert all(isinstance(g, StoredSectionGraph) for g in graphs_by_role(loaded, folds, fold, "train", n_spots - 1))
    assert not any(isinstance(g, StoredSectionGraph) for g in graphs_by_role(loaded, folds, fold, "train", n_spots))
    assert not any(isinstance(g, StoredSectionGraph) for g in graphs_by_role(loaded, folds, fold, "train", 0))
    # graphs held in memory (not a store) are never left anywhere
    assert not any(isinstance(g, StoredSectionGraph) for g in graphs_by_role(dict(built), folds, fold, "train", 1))


def test_links_of_a_pair_missing_from_the_retrieval_cache_come_from_the_sections_embeddings(tiny, graph_params):
    """The store reads each section pair from the retrieval cache but does not depend on it: built without one,
    every fold's links are the same."""
    from spahgc_kedro.graph import aligned_embedding
    from spahgc_kedro.graph_store import fold_section_graphs
    from spahgc_kedro.targets import transformed_expression

    sections, embeddings, _ = tiny
    folds, scaling, cached = tiny_graphs(tiny, graph_params)
    uncached = fold_section_graphs(
        folds=folds,
        target_scaling=scaling,
        embeddings={s: aligned_embedding(sections[s], embeddings[s], s) for s in sections},
        expression=lambda s, genes, transform: transformed_expression(sections[s], genes, transform),
        spot_ids={s: list(a.obs_names) for s, a in sections.items()},
        positions={s: np.asarray(a.obsm["spatial"], dtype=np.float64) for s, a in sections.items()},
        spatial_radius=dict.fromkeys(sections, 1.0),
        neighbours={},
        params=graph_params,
    )
    for name, fold in folds["folds"].items():
        for section_id in fold["test"] + fold["train"]:
            expected, actual = cached.links(name, section_id), uncached.links(name, section_id)
            assert actual.keys() == expected.keys()
            for key, value in expected.items():
                np.testing.assert_array_equal(actual[key], value, err_msg=f"{name}/{section_id}: {key}")


def test_a_fold_plan_without_a_role_lists_no_graph_of_that_role():
    """A role missing from a fold's plan reads as empty, as in fold_plan_key: no graph of it, and no error."""
    from spahgc_kedro.graph_store import SectionGraphs

    graphs = SectionGraphs({"F": {"test": ["C"], "train": ["A", "B"]}}, ["G"], None, None, None)
    assert list(graphs) == ["F/A", "F/B", "F/C"] and graphs.sections() == ["A", "B", "C"]
