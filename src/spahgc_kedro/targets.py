"""Gene panels and target transforms: what the model predicts and on which scale.

Only genes measured in every section are kept (a gene missing from a section has no
label there, and counting it as zero would invent data). Panel rules:
- `list`: a fixed gene list file (HisToGene/Hist2ST lists for HER2+ and cSCC).
- `hvg_intersection`: genes among the top-`n_top` `seurat_v3` HVGs (raw counts) of every
  fitting section, i.e. the fold's training and validation sections, never its test section.
Transforms: `log10` = log10(count + 1); `log10_libsize` = counts scaled to 10,000 per
spot (over all genes of the section) then log10(x + 1). A fixed target sum keeps the
transform per spot, so no statistic crosses sections. Targets are then min-max scaled
per gene with the fitting sections' statistics; a constant gene gets scale 1.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputDataError, MissingInputError

logger = logging.getLogger(__name__)

TRANSFORMS = ("log10", "log10_libsize")
LIBSIZE_TARGET_SUM = 1e4


def load_gene_list(path: str | Path) -> list[str]:
    """Genes from a `.npy` array of strings, a `.csv` (first column) or a text file (one gene a line).

    Never with pickle: a gene list is data, and a pickled `.npy` can run code when loaded.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(
            f"Gene list '{path}' not found (paths are relative to the project root). "
            "The HisToGene/Hist2ST lists (her_hvg_cut_1000.npy, skin_hvg_cut_1000.npy) are in "
            "the data/ folder of github.com/biomed-AI/Hist2ST: put them in "
            "data/01_raw/gene_lists/, or point to your file with "
            "--params datasets.<dataset>.gene_panel.path:/path/to/list.npy"
        )
    if path.suffix == ".npy":
        try:
            genes = np.load(path, allow_pickle=False).ravel().tolist()
        except ValueError as error:
            raise InputDataError(
                f"Gene list '{path}' is a .npy of Python objects, which only loads with pickle, and pickle can run "
                "code: it is refused. Save the genes as strings (np.save(path, np.asarray(genes, dtype=str))) or "
                "as a text file with one gene a line."
            ) from error
    elif path.suffix == ".csv":
        import pandas as pd

        genes = pd.read_csv(path).iloc[:, 0].astype(str).tolist()
    else:
        genes = [line.strip() for line in path.read_text().splitlines()]
    genes = [str(g) for g in genes if str(g)]
    if not genes:
        raise InputDataError(f"Gene list '{path}' is empty: give one gene a line (or a .npy of strings).")
    return list(dict.fromkeys(genes))


def common_genes(var_names: dict[str, list[str]]) -> list[str]:
    """Genes measured in every section, in the first section's order."""
    sections = list(var_names)
    shared = set(var_names[sections[0]]).intersection(*(set(v) for v in var_names.values()))
    return [g for g in var_names[sections[0]] if g in shared]


def seurat_v3_hvgs(adata: Any, n_top: int) -> set[str]:
    """Top-`n_top` highly variable genes of one section by scanpy's `seurat_v3` on raw counts."""
    import anndata as ad
    import scanpy as sc

    counts = ad.AnnData(X=adata.X.copy(), obs=adata.obs[[]].copy(), var=adata.var[[]].copy())
    n_top = min(int(n_top), counts.n_vars)
    table = sc.pp.highly_variable_genes(counts, flavor="seurat_v3", n_top_genes=n_top, inplace=False)
    return set(counts.var_names[table["highly_variable"].to_numpy()])


def select_panel(
    rule: dict[str, Any],
    sections: dict[str, Any],
    fit_sections: list[str],
    hvg_cache: dict[str, set[str]] | None = None,
) -> list[str]:
    """The fold's gene panel; expression-based choices look only at `fit_sections`.

    `hvg_cache` keeps each section's HVGs across folds (they do not depend on the fold).
    """
    present = common_genes({sid: list(a.var_names) for sid, a in sections.items()})
    name = rule.get("rule")
    if name == "list":
        wanted = load_gene_list(rule["path"])
        kept = set(present)
        panel = [g for g in wanted if g in kept]
        if len(panel) < len(wanted):
            logger.warning(
                "Gene list %s: %d of %d genes are not measured in every section and are dropped (kept %d).",
                rule["path"],
                len(wanted) - len(panel),
                len(wanted),
                len(panel),
            )
    elif name == "hvg_intersection":
        hvg_cache = {} if hvg_cache is None else hvg_cache
        for sid in fit_sections:
            if sid not in hvg_cache:
                hvg_cache[sid] = seurat_v3_hvgs(sections[sid], rule.get("n_top", 1000))
        hvgs = [hvg_cache[sid] for sid in fit_sections]
        shared = set(present).intersection(*hvgs)
        panel = [g for g in present if g in shared]
        logger.info(
            "HVG panel: %d genes in the top-%s HVGs of all %d fitting sections.",
            len(panel),
            rule.get("n_top", 1000),
            len(fit_sections),
        )
    else:
        raise ValueError(
            f"Unknown gene_panel.rule '{name}'. Choose 'list' (with a path) or 'hvg_intersection' (with n_top)."
        )
    if not panel:
        raise ValueError(
            f"The gene panel (rule '{name}') is empty for fitting sections {fit_sections}: no "
            "chosen gene is measured in every section. Check the gene list matches the data's "
            "gene symbols, or raise gene_panel.n_top."
        )
    return panel


def transformed_expression(adata: Any, genes: list[str], transform: str) -> np.ndarray:
    """Transformed (not yet min-max scaled) expression `[n_spots, n_genes]` as float32."""
    import scipy.sparse as sp

    counts = adata.X
    if transform == "log10_libsize":
        library = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
        # Empty spots stay zero rather than dividing by zero.
        factor = np.divide(LIBSIZE_TARGET_SUM, library, out=np.zeros_like(library), where=library > 0)
    elif transform == "log10":
        factor = None
    else:
        raise ValueError(f"Unknown graph.target_transform '{transform}'. Choose one of: {', '.join(TRANSFORMS)}.")
    columns = adata.var_names.get_indexer(genes)
    values = counts[:, columns]
    values = values.toarray() if sp.issparse(values) else np.asarray(values)
    values = values.astype(np.float64)
    if factor is not None:
        values *= factor[:, None]
    return np.log10(values + 1.0).astype(np.float32)


def minmax_statistics(values: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene min and max over the stacked spots of the fitting sections."""
    stacked = np.concatenate(values, axis=0)
    return stacked.min(axis=0), stacked.max(axis=0)


def _span(low: list[float], high: list[float]) -> tuple[np.ndarray, np.ndarray]:
    low_a, high_a = np.asarray(low, np.float32), np.asarray(high, np.float32)
    span = high_a - low_a
    span[span == 0] = 1.0
    return low_a, span


def minmax_scale(values: np.ndarray, low: list[float], high: list[float]) -> np.ndarray:
    """Scale to the fitting sections' [min, max]; constant genes get scale 1."""
    low_a, span = _span(low, high)
    # in place after the first operation: large sections are hundreds of MB per temporary
    scaled = values - low_a
    scaled /= span
    return scaled.astype(np.float32, copy=False)


def minmax_unscale(values: np.ndarray, low: list[float], high: list[float]) -> np.ndarray:
    """Invert `minmax_scale`: back to the target-transform scale (log10(count + 1) by default)."""
    low_a, span = _span(low, high)
    return (values * span + low_a).astype(np.float32)


def fold_target_scaling(
    sections: dict[str, Any],
    fold: dict[str, list[str]],
    rule: dict[str, Any],
    transform: str,
    hvg_cache: dict[str, set[str]] | None = None,
) -> dict[str, Any]:
    """`{genes, transform, min, max}` of one fold, from its training and validation sections."""
    fit = fold["train"] + fold["validation"]
    genes = select_panel(rule, sections, fit, hvg_cache)
    low, high = minmax_statistics([transformed_expression(sections[s], genes, transform) for s in fit])
    return {"genes": genes, "transform": transform, "min": low.tolist(), "max": high.tolist()}
