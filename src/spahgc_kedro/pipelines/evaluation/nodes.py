"""Nodes of the evaluation pipeline: SpaHGC and baselines scored with the same metrics.

Every table carries the run description (dataset, gene panel size, target transform,
fold scheme, encoder) as columns, so a table read alone still says what it measures.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from spahgc_kedro.baselines import oracle_depth_predict, predict_baseline, retrieved_neighbours
from spahgc_kedro.graph import raw_embeddings
from spahgc_kedro.graph_store import section_targets
from spahgc_kedro.hints import HeteroData
from spahgc_kedro.metrics import SECTION_METRICS, MeasuredSection, finite_mean, section_metrics
from spahgc_kedro.partitions import load_partition
from spahgc_kedro.predictions import SectionPrediction, describe_run_text, with_run_info
from spahgc_kedro.progress import progress
from spahgc_kedro.tracking import log_fold_test_metrics

logger = logging.getLogger(__name__)

MODEL = "spahgc"
# the mean of a fold's rotated-validation models (graph.validation: rotate), none of which saw its test section
ENSEMBLE = "spahgc_ensemble"
MEAN_METRICS = ("pcc_acg", "pcc_gene_specific", "pcc_heg50", "pcc_hvg50", "mse", "mae")
# reference lines use the test section's measurements: shown beside the methods, never as one
ORACLE_DEPTH = "oracle_depth"
CONVENTIONS = {
    "pcc_acg": "per gene Pearson over the test section's spots, mean over genes, then mean over test sections",
    "pcc_heg50/pcc_hvg50": "same over the 50 most expressed / most variable genes of the test section's measured values",
    "pcc_pooled": "per gene Pearson over all test spots of all folds concatenated (genes shared by all folds), mean over genes",
    "constant_genes": "genes constant in measured or predicted values are excluded from PCC means and counted (n_constant)",
    "pcc_gene_specific": "per gene, partial correlation of predicted and measured given the measured spot depth (mean "
    "normalised target over the panel), mean over genes, then mean over test sections (docs/metrics.md); 0 for any "
    "prediction that only follows the measured depth",
    "mse/mae": "on the normalised targets",
    ENSEMBLE: "with graph.validation: rotate, the mean of the fold's models (one per validation section, none "
    "trained or selected on the test section), scored like spahgc",
    ORACLE_DEPTH: "reference line, not a method: the test section's MEASURED spot depth mapped to every gene by the "
    "training spots' least-squares lines (the best a depth-only prediction can do)",
}


def _fold_training_data(
    section_graphs: dict[str, Callable[[], HeteroData]], fold: str, sections: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated raw embeddings and normalised targets of a fold's sections."""
    xs, ys = [], []
    for section in sections:
        key = f"{fold}/{section}"
        if key not in section_graphs:
            raise KeyError(f"Section graph '{key}' is missing: run the graph pipeline for fold '{fold}'.")
        x, y = section_targets(section_graphs, key)
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def predict_baselines(
    section_graphs: dict[str, Callable[[], HeteroData]],
    folds: dict[str, Any],
    gathered: dict[str, SectionPrediction],
    evaluation_params: dict[str, Any],
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Baseline predictions of each test section from its fold's train+validation section graphs (knn_l1:
    from the test graph's retrieval, i.e. the fold's training sections), and the oracle-depth reference
    line (the test section's measured depth through the training gene lines)."""
    seed = int(evaluation_params["seed"])
    baselines: dict[str, dict[str, np.ndarray]] = {}
    oracle: dict[str, np.ndarray] = {}
    training: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    by_fold = sorted(gathered.items(), key=lambda item: (item[1].fold, item[0]))
    for key, prediction in progress(by_fold, desc="baselines"):
        fold = prediction.fold
        if fold not in training:
            split = folds["folds"][fold]
            # one fold's training data in memory at a time: large sections
            training = {fold: _fold_training_data(section_graphs, fold, [*split["train"], *split["validation"]])}
            # the PCA fitted on the fold's training spots, shared by its test sections and baselines
            projections: dict[tuple[int, int], Any] = {}
        train_x, train_y = training[fold]
        test_graph = load_partition(section_graphs[f"{fold}/{prediction.section_id}"])
        # align the graph's spot order to the prediction's, so every method is scored on the same rows
        order = {str(spot): i for i, spot in enumerate(test_graph.spot_ids)}
        rows = np.array([order[spot] for spot in prediction.spot_ids])
        test_x = raw_embeddings(test_graph)[rows]
        if list(test_graph.genes) != prediction.genes:
            raise ValueError(f"Fold '{fold}': the section graph's genes differ from the prediction's genes.")
        if not np.allclose(test_graph["target"].y.numpy()[rows], prediction.measured, atol=1e-4):
            logger.warning("Fold '%s': the test graph's targets differ from the prediction's measured layer.", fold)
        expression, neighbours = retrieved_neighbours(test_graph)
        baselines[key] = {
            name: predict_baseline(
                name, train_x, train_y, test_x, dict(options or {}), seed, (expression, neighbours[rows]), projections
            )
            for name, options in evaluation_params["baselines"].items()
        }
        oracle[key] = oracle_depth_predict(train_y, prediction.measured)
    return baselines, oracle


def _method_predictions(
    gathered: dict[str, SectionPrediction],
    baselines: dict[str, dict[str, np.ndarray]],
    ensembles: dict[str, np.ndarray],
) -> dict[str, dict[str, np.ndarray]]:
    """{method: {partition: predicted}} with SpaHGC first, then its ensemble (when the folds rotate validation)."""
    methods = {MODEL: {key: prediction.predicted for key, prediction in gathered.items()}}
    if ensembles:
        missing = sorted(set(gathered) - set(ensembles))
        if missing:
            raise ValueError(f"No ensemble prediction for {missing}: every fold must rotate its validation section.")
        methods[ENSEMBLE] = dict(ensembles)
    for key, by_method in baselines.items():
        for name, predicted in by_method.items():
            methods.setdefault(name, {})[key] = predicted
    return methods


def compute_fold_metrics(
    gathered: dict[str, SectionPrediction],
    baselines: dict[str, dict[str, np.ndarray]],
    ensembles: dict[str, np.ndarray],
    run_info: dict[str, Any],
    evaluation_params: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-test-section metrics and per-gene PCC of SpaHGC (and its ensemble) and every baseline."""
    n_top = int(evaluation_params["n_top_genes"])
    methods = _method_predictions(gathered, baselines, ensembles)
    # section by section: the measured values' share of every method's scores is computed once per section
    scores, measured_genes = {}, {}
    for key, prediction in gathered.items():
        measured = MeasuredSection(prediction.measured, n_top)
        for method, by_section in methods.items():
            if key in by_section:
                predicted = by_section[key]
                pcc, gene_specific = measured.pcc(predicted), measured.gene_specific(predicted)
                scores[(method, key)] = (pcc, gene_specific, measured.metrics(predicted, pcc, gene_specific))
        heg = np.zeros(len(prediction.genes), dtype=bool)
        heg[measured.heg] = True
        hvg = np.zeros(len(prediction.genes), dtype=bool)
        hvg[measured.hvg] = True
        values = prediction.measured
        measured_genes[key] = {
            "measured_mean": values.mean(axis=0),
            "measured_var": values.var(axis=0),
            f"heg{n_top}": heg,
            f"hvg{n_top}": hvg,
        }
    fold_rows, gene_tables = [], []
    for method, by_section in methods.items():
        for key in by_section:
            prediction = gathered[key]
            pcc, gene_specific, metrics = scores[(method, key)]
            fold_rows.append(
                {
                    "method": method,
                    "fold": prediction.fold,
                    "section_id": prediction.section_id,
                    "n_spots": prediction.measured.shape[0],
                    **metrics,
                    "mlflow_run_id": str(prediction.uns.get("mlflow_run_id", "")) if method == MODEL else "",
                }
            )
            gene_tables.append(
                pd.DataFrame(
                    {
                        "method": method,
                        "fold": prediction.fold,
                        "section_id": prediction.section_id,
                        "gene": prediction.genes,
                        "pcc": pcc,
                        "pcc_gene_specific": gene_specific,
                        **measured_genes[key],
                    }
                )
            )
    return with_run_info(pd.DataFrame(fold_rows), run_info), with_run_info(
        pd.concat(gene_tables, ignore_index=True), run_info
    )


def summarise_metrics(
    fold_metrics: pd.DataFrame,
    gathered: dict[str, SectionPrediction],
    baselines: dict[str, dict[str, np.ndarray]],
    ensembles: dict[str, np.ndarray],
    oracle_depth: dict[str, np.ndarray],
    run_info: dict[str, Any],
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, dict[str, float]]]:
    """Overall metrics per method (fold means, pooled PCC) as JSON, as a comparison table and as MLflow
    metrics `overall.<method>/<metric>` (kedro-mlflow's `{value, step}` items); the oracle-depth line in the JSON only."""
    # pooled PCC needs one gene panel: use the genes every fold shares
    common = sorted(set.intersection(*(set(p.genes) for p in gathered.values())))
    columns = {key: [p.genes.index(g) for g in common] for key, p in gathered.items()}
    # the pooled measured values are centred once for every method
    pooled_measured = MeasuredSection(
        np.concatenate([gathered[key].measured[:, columns[key]] for key in sorted(gathered)])
    )
    rows = []
    for method, by_section in _method_predictions(gathered, baselines, ensembles).items():
        table = fold_metrics[fold_metrics["method"] == method]
        means = {metric: float(table[metric].mean()) for metric in MEAN_METRICS}
        pooled, pooled_constant = pooled_measured.pooled([by_section[key][:, columns[key]] for key in sorted(gathered)])
        rows.append(
            {
                "method": method,
                **means,
                "pcc_pooled": pooled,
                "n_genes_pooled": len(common),
                "n_constant_pooled": pooled_constant,
                "n_constant_mean": float(table["n_constant"].mean()),
                "n_pcc_gt_0_3_mean": float(table["n_pcc_gt_0_3"].mean()),
                "n_pcc_gt_0_5_mean": float(table["n_pcc_gt_0_5"].mean()),
                "n_test_sections": int(table.shape[0]),
            }
        )
    comparison = with_run_info(pd.DataFrame(rows), run_info)
    oracle_sections = [section_metrics(gathered[key].measured, predicted) for key, predicted in oracle_depth.items()]
    methods = {row["method"]: {k: v for k, v in row.items() if k != "method"} for row in rows}
    overall = {
        "run": run_info,
        "conventions": CONVENTIONS,
        "methods": methods,
        "reference_lines": {
            ORACLE_DEPTH: {
                metric: finite_mean([values[metric] for values in oracle_sections])
                for metric in ("pcc_acg", "pcc_gene_specific", "pcc_heg50", "pcc_hvg50")
            }
        },
    }
    mlflow_metrics = {
        f"{method}/{name}": {"value": float(value), "step": 0}
        for method, values in methods.items()
        for name, value in values.items()
        if isinstance(value, int | float) and np.isfinite(value)
    }
    return overall, comparison, mlflow_metrics


def plot_comparison(comparison: pd.DataFrame, overall: dict[str, Any], run_info: dict[str, Any]) -> Any:
    """Grouped bar chart of the PCC metrics of SpaHGC beside the baselines, with the oracle-depth ACG line."""
    import plotly.graph_objects as go

    metrics = ["pcc_acg", "pcc_gene_specific", "pcc_heg50", "pcc_hvg50", "pcc_pooled"]
    figure = go.Figure(
        [
            go.Bar(name=row["method"], x=metrics, y=[row[m] for m in metrics], text=[f"{row[m]:.3f}" for m in metrics])
            for _, row in comparison.iterrows()
        ]
    )
    figure.update_layout(
        barmode="group",
        title=f"SpaHGC vs baselines<br><sup>{describe_run_text(run_info)}</sup>",
        yaxis_title="Pearson correlation (mean over genes)",
        meta=run_info,
    )
    ceiling = overall.get("reference_lines", {}).get(ORACLE_DEPTH, {}).get("pcc_acg", float("nan"))
    if np.isfinite(ceiling):
        figure.add_hline(
            y=ceiling,
            line_dash="dash",
            annotation_text=f"oracle depth ACG {ceiling:.3f} (uses the test sections' measured depth; not a method)",
        )
    return figure


def log_fold_metrics(fold_metrics: pd.DataFrame) -> None:
    """Each fold's SpaHGC test metrics, logged to the fold's own MLflow run."""
    log_fold_test_metrics(fold_metrics, MODEL, SECTION_METRICS)
