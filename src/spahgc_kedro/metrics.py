"""Metrics of predicted spatial expression, named by the field's conventions.

- ``pcc_acg``: per gene, Pearson over the spots of one test section, mean over genes
  (averaged over folds by the caller): what HisToGene, Hist2ST and SpaHGC report.
- ``pcc_heg50`` / ``pcc_hvg50``: the same over the 50 most highly expressed / most
  variable genes of the *test section's measured values* (the field's reporting
  convention; it peeks at the test section, so it is a reporting choice, never used
  to select a model).
- ``pcc_pooled``: Pearson per gene over all test spots of all folds concatenated,
  mean over genes (HEST-Benchmark style); not comparable with the per-section PCC.
- ``mse`` / ``mae`` on the normalised targets.

A gene whose measured or predicted values are constant over the spots has no
Pearson correlation: it is excluded from every PCC mean and counted in
``n_constant``.
"""

from __future__ import annotations

import numpy as np

SECTION_METRICS = (
    "pcc_acg",
    "pcc_heg50",
    "pcc_hvg50",
    "mse",
    "mae",
    "n_genes",
    "n_constant",
    "n_pcc_gt_0_3",
    "n_pcc_gt_0_5",
)


def pearson_per_gene(measured: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Pearson correlation of each gene (column) over spots; NaN for constant genes."""
    measured = np.asarray(measured, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    if measured.shape != predicted.shape:
        raise ValueError(f"Shapes differ: measured {measured.shape}, predicted {predicted.shape}.")
    dm = measured - measured.mean(axis=0)
    dp = predicted - predicted.mean(axis=0)
    norm = np.sqrt((dm**2).sum(axis=0) * (dp**2).sum(axis=0))
    constant = (np.ptp(measured, axis=0) == 0) | (np.ptp(predicted, axis=0) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        pcc = (dm * dp).sum(axis=0) / norm
    pcc[constant] = np.nan
    return np.clip(pcc, -1.0, 1.0)


def top_genes(measured: np.ndarray, n: int, by: str) -> np.ndarray:
    """Indices of the n genes with the highest measured mean (`by="mean"`) or variance (`by="variance"`)."""
    measured = np.asarray(measured, dtype=np.float64)
    if by == "mean":
        score = measured.mean(axis=0)
    elif by == "variance":
        score = measured.var(axis=0)
    else:
        raise ValueError(f"Unknown gene ranking '{by}': use 'mean' or 'variance'.")
    # Stable sort so ties keep panel order and the selection is reproducible.
    return np.argsort(-score, kind="stable")[: min(n, score.size)]


def _nanmean(values: np.ndarray) -> float:
    """Mean over the finite values; NaN when there are none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def section_metrics(measured: np.ndarray, predicted: np.ndarray, n_top: int = 50) -> dict[str, float]:
    """All per-section metrics of one test section (see the module docstring)."""
    pcc = pearson_per_gene(measured, predicted)
    diff = np.asarray(predicted, dtype=np.float64) - np.asarray(measured, dtype=np.float64)
    return {
        "pcc_acg": _nanmean(pcc),
        "pcc_heg50": _nanmean(pcc[top_genes(measured, n_top, "mean")]),
        "pcc_hvg50": _nanmean(pcc[top_genes(measured, n_top, "variance")]),
        "mse": float((diff**2).mean()),
        "mae": float(np.abs(diff).mean()),
        "n_genes": int(pcc.size),
        "n_constant": int(np.isnan(pcc).sum()),
        "n_pcc_gt_0_3": int((pcc > 0.3).sum()),
        "n_pcc_gt_0_5": int((pcc > 0.5).sum()),
    }


def pooled_pcc(measured: list[np.ndarray], predicted: list[np.ndarray]) -> tuple[float, int]:
    """Pooled PCC over the concatenated spots of all folds, and its number of constant genes."""
    pcc = pearson_per_gene(np.concatenate(measured, axis=0), np.concatenate(predicted, axis=0))
    return _nanmean(pcc), int(np.isnan(pcc).sum())
