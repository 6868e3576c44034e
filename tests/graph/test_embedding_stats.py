"""Graphs keep the fold's standardisation, so baselines can work on the raw embeddings."""

from __future__ import annotations

import numpy as np

from spahgc_kedro.pipelines.evaluation.nodes import raw_embeddings
from spahgc_kedro.pipelines.graph.nodes import build_section_graphs, fit_target_scaling, make_fold_plan


def test_raw_embeddings_are_recovered_from_every_graph(tiny, graph_params):
    sections, embeddings, manifest = tiny
    datasets = {"tiny": {"spatial_radius_spacings": 1.5, "gene_panel": {"rule": "hvg_intersection", "n_top": 10}}}
    folds = make_fold_plan(manifest, graph_params)
    scaling = fit_target_scaling(sections, manifest, folds, datasets, "tiny", graph_params)
    graphs = build_section_graphs(sections, embeddings, manifest, folds, scaling, datasets, "tiny", graph_params)
    for key, build in graphs.items():
        graph = build()
        np.testing.assert_allclose(raw_embeddings(graph), embeddings[graph.section_id].X, rtol=1e-5, atol=1e-5)
        assert not np.allclose(graph["target"].x.numpy(), embeddings[graph.section_id].X), key
