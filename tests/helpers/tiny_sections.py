"""Tiny generated sections and embeddings (five 6 x 6 grids of 120 genes) and their graphs."""

from __future__ import annotations

from typing import Any

import numpy as np

from tests.helpers.partitions import as_partitions

GRID = 6  # spots per side
SPACING = 100.0  # px between neighbouring spot centres
N_GENES = 120
DIM = 8
SECTIONS = [("S1", "A"), ("S2", "A"), ("S3", "B"), ("S4", "B"), ("S5", "C")]
TRAIN_HVGS = list(range(10))  # strongly variable in S1-S4
TEST_HVGS = list(range(5, 15))  # S5: shares G5-G9 with the others, adds G10-G14


def tiny_section(section_id: str, patient_id: str, seed: int, variable_genes: list[int], offset: int = 0):
    """A standard section (design.md §1) on a square grid with chosen highly variable genes."""
    import anndata as ad
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    n = GRID * GRID
    # Poisson genes spanning a range of means set seurat_v3's mean-variance trend;
    # overdispersed negative-binomial genes (mean 10) stand out as the top HVGs.
    means = np.geomspace(1.0, 50.0, N_GENES)
    counts = rng.poisson(means, size=(n, N_GENES)).astype(np.float32)
    counts[:, variable_genes] = rng.negative_binomial(0.5, 0.5 / 10.5, size=(n, len(variable_genes)))
    counts += offset
    rows, cols = np.divmod(np.arange(n), GRID)
    section = ad.AnnData(X=sp.csr_matrix(counts))
    section.obs_names = [f"{section_id}_{r}x{c}" for r, c in zip(rows, cols, strict=True)]
    section.var_names = [f"G{g}" for g in range(N_GENES)]
    section.obs["array_row"], section.obs["array_col"] = rows, cols
    section.obsm["spatial"] = np.c_[cols * SPACING + 50, rows * SPACING + 50].astype(np.float64)
    section.uns.update(
        section_id=section_id,
        patient_id=patient_id,
        dataset="tiny",
        platform="legacy_st",
        spot_spacing_px=SPACING,
    )
    return section


def tiny_embedding(section, seed: int):
    """Patch embeddings in the section's spot order."""
    import anndata as ad

    rng = np.random.default_rng(seed)
    embedding = ad.AnnData(X=rng.normal(size=(section.n_obs, DIM)).astype(np.float32))
    embedding.obs_names = list(section.obs_names)
    return embedding


def tiny_dataset() -> tuple[dict, dict, dict]:
    """Five sections (patients A, A, B, B, C); S5's counts are all >= 1000, unlike the others'."""
    sections, embeddings = {}, {}
    for i, (sid, patient) in enumerate(SECTIONS):
        test_like = sid == "S5"
        sections[sid] = tiny_section(
            sid,
            patient,
            seed=i,
            variable_genes=TEST_HVGS if test_like else TRAIN_HVGS,
            offset=1000 if test_like else 0,
        )
        embeddings[sid] = tiny_embedding(sections[sid], seed=100 + i)
    manifest = {
        "dataset": "tiny",
        "format": "generated",
        "raw_dir": "",
        "preset": {"gene_panel": {"rule": "hvg_intersection", "n_top": 10}, "spatial_radius_spacings": 1.5},
        "sections": [{"section_id": s, "patient_id": p} for s, p in SECTIONS],
    }
    return sections, embeddings, manifest


def graph_params() -> dict[str, Any]:
    """The graph parameters of conf/base/parameters_graph.yml, with small blocks."""
    return {
        "fold_scheme": "leave_one_section_out",
        "fold": "all",
        "validation": "auto",
        "target_transform": "log10",
        "k_refer": 7,
        "metric": "l1",
        "k_close": 3,
        "max_spatial_neighbours": 5,
        "block_size": 16,
    }


def tiny_graphs(tiny: tuple[dict, dict, dict], params: dict[str, Any], gene_panel: dict | None = None) -> tuple:
    """Folds, target scaling and lazily built section graphs of the tiny sections, by the graph nodes."""
    from spahgc_kedro.pipelines.graph.nodes import build_section_graphs, fit_target_scaling, make_fold_plan

    sections, embeddings, manifest = tiny
    preset = {**manifest["preset"], **({"gene_panel": gene_panel} if gene_panel else {})}
    folds = make_fold_plan(manifest, params)
    scaling = fit_target_scaling(as_partitions(sections), manifest, folds, preset, params)
    graphs = build_section_graphs(
        as_partitions(sections), as_partitions(embeddings), manifest, folds, scaling, preset, params
    )
    return folds, scaling, graphs


def tiny_fold_references(
    tiny: tuple[dict, dict, dict], folds: dict, scaling: dict, params: dict[str, Any], name: str, neighbours=None
):
    """Fold `name`'s references fitted in one go (`FoldReferences.fit`, the predict pipeline's path, with an
    optional retrieval cache) and the raw embeddings they were fitted on."""
    from spahgc_kedro.graph import FoldReferences, aligned_embedding
    from spahgc_kedro.targets import transformed_expression

    sections, embeddings, _ = tiny
    raw = {s: aligned_embedding(sections[s], embeddings[s], s) for s in sections}
    references = FoldReferences.fit(
        name,
        folds["folds"][name],
        scaling[name],
        raw,
        lambda s, genes, transform: transformed_expression(sections[s], genes, transform),
        params,
        neighbours,
    )
    return references, raw
