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
from tqdm.auto import tqdm

from spahgc_kedro.baselines import oracle_depth_predict, predict_baseline
from spahgc_kedro.metrics import (
    SECTION_METRICS,
    finite_mean,
    gene_specific_pcc,
    pearson_per_gene,
    pooled_pcc,
    section_metrics,
    top_genes,
)
from spahgc_kedro.partitions import iter_partitions, load_partition
from spahgc_kedro.schema import Layers, Obsm, Uns
from spahgc_kedro.tracking import pipeline_run_active

logger = logging.getLogger(__name__)

MODEL = "spahgc"
MEAN_METRICS = ("pcc_acg", "pcc_gene_specific", "pcc_heg50", "pcc_hvg50", "mse", "mae")
# reference lines use the test section's measurements: shown beside the methods, never as one
ORACLE_DEPTH = "oracle_depth"
RUN_INFO_COLUMNS = ("dataset", "n_genes_panel", "target_transform", "fold_scheme", "encoder")


def gather_predictions(predictions: dict[str, Callable[[], Any]]) -> dict[str, dict[str, Any]]:
    """Load each test section's prediction AnnData into plain arrays, keyed by partition."""
    if not predictions:
        raise ValueError("No predictions found: run the train pipeline first (`kedro run --pipeline=train`).")
    gathered = {}
    # Keyed by partition, not fold: leave-one-patient-out folds test several sections.
    for key, adata in tqdm(iter_partitions(predictions), total=len(predictions), desc="loading predictions"):
        measured = adata.layers[Layers.MEASURED]
        measured = measured.toarray() if hasattr(measured, "toarray") else np.asarray(measured)
        predicted = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
        gathered[key] = {
            "fold": str(adata.uns.get(Uns.FOLD, key)),
            "section_id": str(adata.uns.get(Uns.SECTION_ID, key)),
            "genes": [str(g) for g in adata.var_names],
            "spot_ids": [str(s) for s in adata.obs_names],
            "spatial": np.asarray(adata.obsm[Obsm.SPATIAL], dtype=np.float64),
            "measured": measured.astype(np.float32),
            "predicted": predicted.astype(np.float32),
            "uns": {k: adata.uns[k] for k in adata.uns if isinstance(adata.uns[k], (str, int, float))},
        }
    return gathered


def describe_run(gathered: dict[str, dict[str, Any]], folds: dict[str, Any]) -> dict[str, Any]:
    """The run description every table and figure states: data, panel, transform, folds, encoder."""
    first = next(iter(gathered.values()))["uns"]
    panel_sizes = sorted({len(info["genes"]) for info in gathered.values()})
    test_sections: dict[str, list[str]] = {}
    for info in gathered.values():
        test_sections.setdefault(info["fold"], []).append(info["section_id"])
    return {
        "dataset": str(first.get("dataset", "unknown")),
        "encoder": str(first.get("encoder", "unknown")),
        "fold_scheme": str(first.get("fold_scheme", folds.get("scheme", "unknown"))),
        "target_transform": str(first.get("target_transform", "unknown")),
        # Panels are computed per fold from training sections, so sizes may differ.
        "n_genes_panel": panel_sizes[0] if len(panel_sizes) == 1 else f"{panel_sizes[0]}-{panel_sizes[-1]}",
        "n_folds": len(test_sections),
        "folds": test_sections,
    }


def describe_run_text(run_info: dict[str, Any]) -> str:
    """One-line caption of the run description for figure titles."""
    return (
        f"data {run_info['dataset']}, {run_info['n_genes_panel']} genes, target {run_info['target_transform']}, "
        f"folds {run_info['fold_scheme']} ({run_info['n_folds']}), encoder {run_info['encoder']}"
    )


def with_run_info(table: pd.DataFrame, run_info: dict[str, Any]) -> pd.DataFrame:
    """Append the run description as constant columns."""
    return table.assign(**{column: str(run_info[column]) for column in RUN_INFO_COLUMNS})


def _fold_training_data(
    section_graphs: dict[str, Callable[[], Any]], fold: str, sections: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated target embeddings and normalised targets of a fold's sections."""
    xs, ys = [], []
    for section in sections:
        key = f"{fold}/{section}"
        if key not in section_graphs:
            raise KeyError(f"Section graph '{key}' is missing: run the graph pipeline for fold '{fold}'.")
        graph = load_partition(section_graphs[key])
        xs.append(raw_embeddings(graph))
        ys.append(graph["target"].y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def raw_embeddings(graph: Any) -> np.ndarray:
    """The section's patch embeddings before the fold's standardisation (what SpaHGC retrieves on)."""
    return graph["target"].x.numpy() * graph.embedding_std.numpy() + graph.embedding_mean.numpy()


def predict_baselines(
    section_graphs: dict[str, Callable[[], Any]],
    folds: dict[str, Any],
    gathered: dict[str, dict[str, Any]],
    params: dict[str, Any],
    seed: int,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Baseline predictions of each test section from its fold's train+validation section graphs,
    and the oracle-depth reference line (the test section's measured depth through the training gene lines)."""
    baselines: dict[str, dict[str, np.ndarray]] = {}
    oracle: dict[str, np.ndarray] = {}
    training: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for key, info in tqdm(sorted(gathered.items()), desc="baselines"):
        fold = info["fold"]
        if fold not in training:
            split = folds["folds"][fold]
            training[fold] = _fold_training_data(section_graphs, fold, [*split["train"], *split["validation"]])
        train_x, train_y = training[fold]
        test_graph = load_partition(section_graphs[f"{fold}/{info['section_id']}"])
        # Align the graph's spot order to the prediction's, so every method is scored on the same rows.
        order = {str(spot): i for i, spot in enumerate(test_graph.spot_ids)}
        rows = np.array([order[spot] for spot in info["spot_ids"]])
        test_x = raw_embeddings(test_graph)[rows]
        if list(test_graph.genes) != info["genes"]:
            raise ValueError(f"Fold '{fold}': the section graph's genes differ from the prediction's genes.")
        if not np.allclose(test_graph["target"].y.numpy()[rows], info["measured"], atol=1e-4):
            logger.warning("Fold '%s': the test graph's targets differ from the prediction's measured layer.", fold)
        baselines[key] = {
            name: predict_baseline(name, train_x, train_y, test_x, dict(options or {}), seed)
            for name, options in params["baselines"].items()
        }
        oracle[key] = oracle_depth_predict(train_y, info["measured"])
    return baselines, oracle


def _method_predictions(
    gathered: dict[str, dict[str, Any]], baselines: dict[str, dict[str, np.ndarray]]
) -> dict[str, dict[str, np.ndarray]]:
    """{method: {partition: predicted}} with SpaHGC first."""
    methods = {MODEL: {key: info["predicted"] for key, info in gathered.items()}}
    for key, by_method in baselines.items():
        for name, predicted in by_method.items():
            methods.setdefault(name, {})[key] = predicted
    return methods


def compute_fold_metrics(
    gathered: dict[str, dict[str, Any]],
    baselines: dict[str, dict[str, np.ndarray]],
    run_info: dict[str, Any],
    params: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-test-section metrics and per-gene PCC of SpaHGC and every baseline."""
    n_top = int(params["n_top_genes"])
    fold_rows, gene_tables = [], []
    for method, by_section in _method_predictions(gathered, baselines).items():
        for key, predicted in by_section.items():
            info = gathered[key]
            measured = info["measured"]
            fold_rows.append(
                {
                    "method": method,
                    "fold": info["fold"],
                    "section_id": info["section_id"],
                    "n_spots": measured.shape[0],
                    **section_metrics(measured, predicted, n_top),
                    "mlflow_run_id": str(info["uns"].get("mlflow_run_id", "")) if method == MODEL else "",
                }
            )
            heg = np.zeros(len(info["genes"]), dtype=bool)
            heg[top_genes(measured, n_top, "mean")] = True
            hvg = np.zeros(len(info["genes"]), dtype=bool)
            hvg[top_genes(measured, n_top, "variance")] = True
            gene_tables.append(
                pd.DataFrame(
                    {
                        "method": method,
                        "fold": info["fold"],
                        "section_id": info["section_id"],
                        "gene": info["genes"],
                        "pcc": pearson_per_gene(measured, predicted),
                        "pcc_gene_specific": gene_specific_pcc(measured, predicted),
                        "measured_mean": measured.mean(axis=0),
                        "measured_var": measured.var(axis=0),
                        f"heg{n_top}": heg,
                        f"hvg{n_top}": hvg,
                    }
                )
            )
    return with_run_info(pd.DataFrame(fold_rows), run_info), with_run_info(
        pd.concat(gene_tables, ignore_index=True), run_info
    )


def summarise_metrics(
    fold_metrics: pd.DataFrame,
    gathered: dict[str, dict[str, Any]],
    baselines: dict[str, dict[str, np.ndarray]],
    oracle_depth: dict[str, np.ndarray],
    run_info: dict[str, Any],
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Overall metrics per method (fold means, pooled PCC) as JSON and as a comparison table,
    with the oracle-depth reference line in the JSON only."""
    # Pooled PCC needs one gene panel: use the genes every fold shares.
    common = sorted(set.intersection(*(set(info["genes"]) for info in gathered.values())))
    columns = {key: [info["genes"].index(g) for g in common] for key, info in gathered.items()}
    measured = [gathered[key]["measured"][:, columns[key]] for key in sorted(gathered)]
    rows = []
    for method, by_section in _method_predictions(gathered, baselines).items():
        table = fold_metrics[fold_metrics["method"] == method]
        means = {metric: float(table[metric].mean()) for metric in MEAN_METRICS}
        pooled, pooled_constant = pooled_pcc(measured, [by_section[key][:, columns[key]] for key in sorted(gathered)])
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
    oracle_sections = [section_metrics(gathered[key]["measured"], predicted) for key, predicted in oracle_depth.items()]
    overall = {
        "run": run_info,
        "conventions": {
            "pcc_acg": "per gene Pearson over the test section's spots, mean over genes, then mean over test sections",
            "pcc_heg50/pcc_hvg50": "same over the 50 most expressed / most variable genes of the test section's measured values",
            "pcc_pooled": "per gene Pearson over all test spots of all folds concatenated (genes shared by all folds), mean over genes",
            "constant_genes": "genes constant in measured or predicted values are excluded from PCC means and counted (n_constant)",
            "pcc_gene_specific": "per gene, partial correlation of predicted and measured given the measured spot "
            "depth (mean normalised target over the panel), mean over genes, then mean over test sections "
            "(docs/metrics.md); 0 for any prediction that only follows the measured depth",
            "mse/mae": "on the normalised targets",
            ORACLE_DEPTH: "reference line, not a method: the test section's MEASURED spot depth mapped to every "
            "gene by the training spots' least-squares lines (the best a depth-only prediction can do)",
        },
        "methods": {row["method"]: {k: v for k, v in row.items() if k != "method"} for row in rows},
        "reference_lines": {
            ORACLE_DEPTH: {
                metric: finite_mean([values[metric] for values in oracle_sections])
                for metric in ("pcc_acg", "pcc_gene_specific", "pcc_heg50", "pcc_hvg50")
            }
        },
    }
    return overall, comparison


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


def log_metrics_to_mlflow(fold_metrics: pd.DataFrame, overall: dict[str, Any]) -> None:
    """Log each fold's metrics to its training run and the overall metrics to the active run."""
    try:
        import mlflow
        from mlflow.tracking import MlflowClient
    except ImportError:
        logger.debug("mlflow is not installed: metrics not logged.")
        return
    model_rows = fold_metrics[(fold_metrics["method"] == MODEL) & (fold_metrics["mlflow_run_id"] != "")]
    for _, row in model_rows.iterrows():
        try:
            client = MlflowClient()
            for metric in SECTION_METRICS:
                if np.isfinite(row[metric]):
                    client.log_metric(row["mlflow_run_id"], f"test_{metric}", float(row[metric]))
        except Exception as error:  # noqa: BLE001 - a missing run or tracking store must not fail the evaluation
            logger.debug("Fold '%s': metrics not logged to run %s (%s).", row["fold"], row["mlflow_run_id"], error)
    if not pipeline_run_active():
        logger.debug("No active MLflow run: overall metrics not logged.")
        return
    for method, values in overall["methods"].items():
        mlflow.log_metrics(
            {f"{method}/{k}": float(v) for k, v in values.items() if isinstance(v, (int, float)) and np.isfinite(v)}
        )
