"""Graphs keep the fold's standardisation, so baselines can work on the raw embeddings."""

from __future__ import annotations

import numpy as np

from spahgc_kedro.graph import raw_embeddings
from tests.helpers.tiny_sections import tiny_graphs


def test_raw_embeddings_are_recovered_from_every_graph(tiny, graph_params):
    _, embeddings, _ = tiny
    _, _, graphs = tiny_graphs(tiny, graph_params)
    for key, build in graphs.items():
        graph = build()
        np.testing.assert_allclose(raw_embeddings(graph), embeddings[graph.section_id].X, rtol=1e-5, atol=1e-5)
        assert not np.allclose(graph["target"].x.numpy(), embeddings[graph.section_id].X), key
