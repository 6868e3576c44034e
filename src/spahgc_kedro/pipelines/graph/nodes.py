"""Nodes of the graph pipeline: folds, target scaling and per-fold section graphs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from spahgc_kedro.folds import make_folds
from spahgc_kedro.graph import aligned_embedding, graph_preset, pair_neighbours, retrieval_pairs
from spahgc_kedro.graph_store import SectionGraphs, fold_section_graphs
from spahgc_kedro.hints import AnnData
from spahgc_kedro.partitions import load_partition
from spahgc_kedro.progress import progress
from spahgc_kedro.schema import Obsm, Uns
from spahgc_kedro.spill import spilled
from spahgc_kedro.targets import fold_target_scaling, transformed_expression

logger = logging.getLogger(__name__)


def resolve_graph_preset(section_manifest: dict[str, Any], datasets: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The dataset's gene-panel rule and spatial radius, the run's parameters over the ingested manifest."""
    return graph_preset(section_manifest, datasets, dataset)


def _load_sections(sections: dict[str, Callable[[], AnnData]], section_ids: list[str]) -> dict[str, AnnData]:
    """Load the manifest's sections from their partitions, failing on a missing one."""
    missing = [s for s in section_ids if s not in sections]
    if missing:
        raise ValueError(
            f"Sections {missing} are in the section manifest but have no partition in "
            "`sections`: re-run the ingestion pipeline."
        )
    return {s: load_partition(sections[s]) for s in section_ids}


def make_fold_plan(section_manifest: dict[str, Any], graph_params: dict[str, Any]) -> dict[str, Any]:
    """Folds of the chosen scheme, each with test, validation and training sections."""
    return make_folds(
        section_manifest["sections"],
        graph_params["fold_scheme"],
        str(graph_params["fold"]),
        str(graph_params["validation"]),
    )


def fit_target_scaling(
    sections: dict[str, Callable[[], AnnData]],
    section_manifest: dict[str, Any],
    folds: dict[str, Any],
    graph_preset: dict[str, Any],
    graph_params: dict[str, Any],
) -> dict[str, Any]:
    """Per fold: gene panel and per-gene min-max of the training and validation sections."""

    loaded = _load_sections(sections, [s["section_id"] for s in section_manifest["sections"]])
    hvg_cache: dict[str, set[str]] = {}
    return {
        name: fold_target_scaling(loaded, fold, graph_preset["gene_panel"], graph_params["target_transform"], hvg_cache)
        for name, fold in progress(folds["folds"].items(), desc="target scaling", unit="fold")
    }


def build_section_graphs(
    sections: dict[str, Callable[[], AnnData]],
    patch_embeddings: dict[str, Callable[[], AnnData]],
    section_manifest: dict[str, Any],
    folds: dict[str, Any],
    target_scaling: dict[str, Any],
    graph_preset: dict[str, Any],
    graph_params: dict[str, Any],
) -> SectionGraphs:
    """One graph per section per fold, `<fold>/<section>`, from parts the graph store keeps once."""
    section_ids = [s["section_id"] for s in section_manifest["sections"]]
    loaded = _load_sections(sections, section_ids)
    missing = [s for s in section_ids if s not in patch_embeddings]
    if missing:
        raise ValueError(
            f"No patch embeddings for sections {missing}: re-run the embedding pipeline "
            "(kedro run --pipeline=embedding)."
        )
    # one section's AnnData in memory at a time; the embeddings themselves are held as mapped files
    embeddings = {s: spilled(aligned_embedding(loaded[s], load_partition(patch_embeddings[s]), s)) for s in section_ids}
    neighbours = pair_neighbours(
        embeddings,
        retrieval_pairs(folds),
        graph_params["k_refer"],
        graph_params["metric"],
        graph_params["block_size"],
        device=graph_params.get("retrieval_device", "cpu"),
    )
    radius = {
        s: float(graph_preset["spatial_radius_spacings"]) * float(a.uns[Uns.SPOT_SPACING_PX]) for s, a in loaded.items()
    }
    return fold_section_graphs(
        folds=folds,
        target_scaling=target_scaling,
        embeddings=embeddings,
        expression=lambda s, genes, transform: transformed_expression(loaded[s], genes, transform),
        spot_ids={s: list(a.obs_names) for s, a in loaded.items()},
        positions={s: np.asarray(a.obsm[Obsm.SPATIAL], dtype=np.float64) for s, a in loaded.items()},
        spatial_radius=radius,
        neighbours=neighbours,
        params=graph_params,
    )
