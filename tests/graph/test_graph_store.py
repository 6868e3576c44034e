"""The section graph store: graphs read back equal the graphs built directly, each section stored once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kedro.io import DatasetError

from spahgc_kedro.datasets import SectionGraphStore
from spahgc_kedro.graph import FoldReferences, aligned_embedding, fold_plan_key
from spahgc_kedro.targets import transformed_expression
from tests.helpers.tiny_sections import tiny_graphs

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
        assert getattr(actual, name) == getattr(expected, name), name
    assert torch.equal(actual.embedding_mean, expected.embedding_mean)
    assert torch.equal(actual.embedding_std, expected.embedding_std)


def direct_graph(tiny, folds, scaling, params, name: str, section_id: str, role: str):
    """The graph built in one go by `FoldReferences.build` (the predict pipeline's path), without the store."""
    sections, embeddings, _ = tiny
    raw = {s: aligned_embedding(sections[s], embeddings[s], s) for s in sections}
    references = FoldReferences.fit(
        name,
        folds["folds"][name],
        scaling[name],
        raw,
        lambda s, genes, transform: transformed_expression(sections[s], genes, transform),
        params,
    )
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
