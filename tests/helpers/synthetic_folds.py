"""Builds tiny generated folds: section graphs, predictions and fold splits in the pipeline contracts."""

from __future__ import annotations

from typing import Any

import numpy as np

from tests.helpers.partitions import as_partitions


def make_run(
    n_sections: int = 3,
    side: int = 6,
    n_genes: int = 10,
    dim: int = 8,
    seed: int = 0,
    tests_per_fold: int = 1,
    k_refer: int = 7,
) -> dict[str, Any]:
    """Leave-one-out folds (of `tests_per_fold` sections) over sections whose targets are linear in embeddings;
    each graph's refer edges are its `k_refer` nearest spots by L1 (scipy) among the fold's other training sections."""
    import torch
    from torch_geometric.data import HeteroData

    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(dim, n_genes))
    genes = [f"G{i}" for i in range(n_genes)]
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2)
    sections = {}
    for s in range(n_sections):
        x = rng.normal(size=(side * side, dim)).astype(np.float32)
        y = (x @ weights + 0.1 * rng.normal(size=(side * side, n_genes))).astype(np.float32)
        spots = [f"{i}x{j}" for i, j in grid]
        sections[f"S{s}"] = {"x": x, "y": y, "spots": spots, "pos": grid * 100.0 + 50.0}
    names = sorted(sections)
    scheme = "leave_one_section_out" if tests_per_fold == 1 else "leave_one_patient_out"
    folds = {"scheme": scheme, "folds": {}}
    graphs, predictions = {}, {}
    groups = [names[i : i + tests_per_fold] for i in range(0, len(names), tests_per_fold)]
    for k, tests in enumerate(groups):
        others = [n for n in names if n not in tests]
        fold = f"fold_{k}"
        folds["folds"][fold] = {"test": tests, "validation": others[:1], "train": others[1:]}
        for name in names:
            data = HeteroData()
            data["target"].x = torch.from_numpy(sections[name]["x"])
            data["target"].y = torch.from_numpy(sections[name]["y"])
            train = folds["folds"][fold]["train"]
            # a lone training section retrieves from itself (only the test graphs' retrieval is read here)
            _add_retrieval(data, sections, name, [t for t in train if t != name] or train, k_refer)
            data.section_id, data.fold, data.genes, data.spot_ids = name, fold, genes, sections[name]["spots"]
            data.role = "test" if name in tests else "train"
            # identity standardisation: target.x are the raw embeddings
            data.embedding_mean, data.embedding_std = torch.zeros(dim), torch.ones(dim)
            graphs[f"{fold}/{name}"] = data
        for test in tests:
            predictions[fold if tests_per_fold == 1 else f"{fold}-{test}"] = _prediction(
                sections[test], genes, fold, test, scheme, rng
            )
    return {
        "sections": sections,
        "folds": folds,
        "section_graphs": as_partitions(graphs),
        "predictions": predictions,
        "genes": genes,
    }


def _add_retrieval(data: Any, sections: dict[str, Any], name: str, pool: list[str], k: int) -> None:
    """Reference nodes and refer edges as the graph stage writes them, found here by scipy's L1 distances."""
    import torch
    from scipy.spatial.distance import cdist

    x = np.vstack([sections[s]["x"] for s in pool])
    y = np.vstack([sections[s]["y"] for s in pool])
    nearest = np.argsort(cdist(sections[name]["x"], x, "cityblock"), axis=1, kind="stable")[:, :k]
    used, rows = np.unique(nearest, return_inverse=True)
    data["reference"].x = torch.from_numpy(np.hstack([x[used], y[used]]).astype(np.float32))
    n = nearest.shape[0]
    data["reference", "refer", "target"].edge_index = torch.from_numpy(
        np.vstack([rows.reshape(-1), np.repeat(np.arange(n), k)])
    )
    data.embedding_dim = x.shape[1]
    data.reference_sections = pool


def _prediction(section: dict[str, Any], genes: list[str], fold: str, test: str, scheme: str, rng: Any) -> Any:
    """A noisy prediction of a test section, as the train pipeline writes it."""
    import anndata as ad

    measured = section["y"]
    adata = ad.AnnData(
        X=(measured + 0.5 * rng.normal(size=measured.shape)).astype(np.float32),
        layers={"measured": measured},
    )
    adata.obs_names = section["spots"]
    adata.var_names = genes
    adata.obsm["spatial"] = section["pos"]
    adata.uns.update(
        fold=fold,
        section_id=test,
        dataset="synthetic",
        encoder="toy",
        fold_scheme=scheme,
        target_transform="log10(count+1), min-max",
    )
    return lambda: adata
