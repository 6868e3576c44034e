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
- ``pcc_gene_specific``: the depth-controlled PCC (docs/metrics.md). With targets
  log10(count + 1), every gene rises and falls with the spot's depth (total counts), so
  a method that only gets each spot's depth right scores well on ACG. Per test section
  and gene, the measured and the predicted values are each regressed (least squares,
  with intercept) on the spot's *measured* depth, the mean of its measured normalised
  targets over the panel; the score is the Pearson correlation of the two residuals (a
  partial correlation), mean over genes. A prediction that is any per-gene affine
  function of the measured depth scores 0; a perfect prediction scores 1.

A gene whose measured or predicted values are constant over the spots has no
Pearson correlation: it is excluded from every PCC mean and counted in
``n_constant``.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

SECTION_METRICS = (
    "pcc_acg",
    "pcc_gene_specific",
    "pcc_heg50",
    "pcc_hvg50",
    "mse",
    "mae",
    "n_genes",
    "n_constant",
    "n_pcc_gt_0_3",
    "n_pcc_gt_0_5",
)


def _centred(values: np.ndarray) -> np.ndarray:
    """A float64 copy of the columns minus their means."""
    centred = np.array(values, dtype=np.float64)
    centred -= centred.mean(axis=0)
    return centred


def _column_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Column sums of a * b without the product as a temporary (a 50,000-spot section is 300 MB per array)."""
    return np.einsum("ij,ij->j", a, b)


def _correlation_of_centred(dm: np.ndarray, dp: np.ndarray) -> np.ndarray:
    """Per-column Pearson correlation of centred columns, NaN where either column is constant, clipped to [-1, 1]."""
    norm = np.sqrt(_column_dot(dm, dm) * _column_dot(dp, dp))
    with np.errstate(invalid="ignore", divide="ignore"):
        pcc = _column_dot(dm, dp) / norm
    pcc[(np.ptp(dm, axis=0) == 0) | (np.ptp(dp, axis=0) == 0)] = np.nan
    return np.clip(pcc, -1.0, 1.0)


def _check_shapes(measured: np.ndarray, predicted: np.ndarray) -> None:
    if measured.shape != predicted.shape:
        raise ValueError(f"Shapes differ: measured {measured.shape}, predicted {predicted.shape}.")


def pearson_per_gene(measured: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Pearson correlation of each gene (column) over spots; NaN for constant genes."""
    return MeasuredSection(measured).pcc(predicted)


def spot_depth(measured: np.ndarray) -> np.ndarray:
    """Each spot's depth: the mean of its measured (normalised) targets over the panel."""
    return np.asarray(measured, dtype=np.float64).mean(axis=1)


def _remove_depth(centred: np.ndarray, centred_depth: np.ndarray) -> np.ndarray:
    """Centred columns minus their least-squares slope on the centred depth, in place."""
    spread = centred_depth @ centred_depth
    if spread > 0:
        centred -= np.outer(centred_depth, centred_depth @ centred / spread)
    return centred


def _depth_residuals(values: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Residuals of each column after a least-squares fit on [1, depth] (the closed form of the two-column
    fit: centred values minus slope x centred depth; a constant depth leaves the centred values)."""
    return _remove_depth(_centred(values), depth - depth.mean())


def gene_specific_pcc(measured: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Per gene, the partial correlation of predicted and measured given the measured spot depth.

    0 where the prediction is an affine function of the measured depth (no depth-independent
    variation); NaN where measured or predicted values are constant over the spots.
    """
    return MeasuredSection(measured).gene_specific(predicted)


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


def finite_mean(values: np.ndarray | list[float]) -> float:
    """Mean over the finite values; NaN when there are none."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def section_metrics(
    measured: np.ndarray,
    predicted: np.ndarray,
    n_top: int = 50,
    pcc: np.ndarray | None = None,
    gene_specific: np.ndarray | None = None,
) -> dict[str, float]:
    """All per-section metrics of one test section (see the module docstring); `pcc` and `gene_specific`:
    the per-gene values when already computed (`pearson_per_gene`, `gene_specific_pcc`)."""
    return MeasuredSection(measured, n_top).metrics(predicted, pcc, gene_specific)


def pooled_pcc(measured: list[np.ndarray], predicted: list[np.ndarray]) -> tuple[float, int]:
    """Pooled PCC over the concatenated spots of all folds, and its number of constant genes."""
    return MeasuredSection(np.concatenate(measured, axis=0)).pooled(predicted)


class MeasuredSection:
    """One test section's measured targets and what every method's scores share, computed once.

    Scoring several methods on one section (or on the pooled spots) centres the measured values,
    fits their depth residuals and ranks the HEG/HVG genes once, not once per method; the
    module's functions score one prediction through it.
    """

    def __init__(self, measured: np.ndarray, n_top: int = 50) -> None:
        self.measured, self.n_top = np.asarray(measured), n_top

    @cached_property
    def centred(self) -> np.ndarray:
        """The measured columns minus their means (float64)."""
        return _centred(self.measured)

    @cached_property
    def centred_depth(self) -> np.ndarray:
        """Each spot's measured depth minus its mean over the spots."""
        depth = spot_depth(self.measured)
        return depth - depth.mean()

    @cached_property
    def residual(self) -> np.ndarray:
        """The measured columns' residuals after their least-squares line on the measured depth."""
        return _remove_depth(_centred(self.measured), self.centred_depth)

    @cached_property
    def constant(self) -> np.ndarray:
        """Genes whose measured values are constant over the spots."""
        return np.ptp(self.measured, axis=0) == 0

    @cached_property
    def heg(self) -> np.ndarray:
        """The n_top most highly expressed genes (measured mean)."""
        return top_genes(self.measured, self.n_top, "mean")

    @cached_property
    def hvg(self) -> np.ndarray:
        """The n_top most variable genes (measured variance)."""
        return top_genes(self.measured, self.n_top, "variance")

    def pcc(self, predicted: np.ndarray) -> np.ndarray:
        """Pearson correlation of each gene over the spots (`pearson_per_gene`)."""
        predicted = np.asarray(predicted)
        _check_shapes(self.measured, predicted)
        return _correlation_of_centred(self.centred, _centred(predicted))

    def gene_specific(self, predicted: np.ndarray) -> np.ndarray:
        """The partial correlation given the measured depth (`gene_specific_pcc`)."""
        predicted = np.asarray(predicted)
        _check_shapes(self.measured, predicted)
        residual_predicted = _centred(predicted)
        spread = np.sqrt(_column_dot(residual_predicted, residual_predicted))
        residual_predicted = _remove_depth(residual_predicted, self.centred_depth)
        # the residuals are centred (both factors of the fit are), so their correlation needs no second centring
        pcc = _correlation_of_centred(self.residual, residual_predicted)
        # residuals at float32 rounding level: the prediction only carries depth, scored 0 rather than noise
        depth_only = np.sqrt(_column_dot(residual_predicted, residual_predicted)) <= 1e-5 * spread
        pcc[depth_only & (spread > 0)] = 0.0
        pcc[self.constant | (np.ptp(predicted, axis=0) == 0)] = np.nan
        return pcc

    def metrics(
        self, predicted: np.ndarray, pcc: np.ndarray | None = None, gene_specific: np.ndarray | None = None
    ) -> dict[str, float]:
        """All per-section metrics (`section_metrics`)."""
        pcc = self.pcc(predicted) if pcc is None else pcc
        gene_specific = self.gene_specific(predicted) if gene_specific is None else gene_specific
        diff = np.asarray(predicted, dtype=np.float64) - np.asarray(self.measured, dtype=np.float64)
        return {
            "pcc_acg": finite_mean(pcc),
            "pcc_gene_specific": finite_mean(gene_specific),
            "pcc_heg50": finite_mean(pcc[self.heg]),
            "pcc_hvg50": finite_mean(pcc[self.hvg]),
            "mse": float((diff**2).mean()),
            "mae": float(np.abs(diff).mean()),
            "n_genes": int(pcc.size),
            "n_constant": int(np.isnan(pcc).sum()),
            "n_pcc_gt_0_3": int((pcc > 0.3).sum()),
            "n_pcc_gt_0_5": int((pcc > 0.5).sum()),
        }

    def pooled(self, predicted: list[np.ndarray]) -> tuple[float, int]:
        """Pooled PCC of predictions given per fold (concatenated in this object's spot order) and its constant genes."""
        pcc = self.pcc(np.concatenate(predicted, axis=0))
        return finite_mean(pcc), int(np.isnan(pcc).sum())
