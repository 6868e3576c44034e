"""Evaluation pipeline: score SpaHGC's predictions and the baselines on the same folds."""

from kedro.pipeline import Pipeline, node, pipeline

from spahgc_kedro.predictions import describe_run, ensemble_predictions, gather_predictions

from .nodes import compute_fold_metrics, log_fold_metrics, plot_comparison, predict_baselines, summarise_metrics


def create_pipeline(**kwargs) -> Pipeline:
    """Wire prediction loading, baselines, metrics, the comparison figure and the fold runs' test metrics."""
    return pipeline(
        [
            node(gather_predictions, ["predictions", "folds"], "test_predictions", name="gather_predictions"),
            node(
                ensemble_predictions,
                ["predictions", "folds", "test_predictions"],
                "ensemble_predictions",
                name="ensemble_predictions",
            ),
            node(describe_run, ["test_predictions", "folds"], "evaluation_run_info", name="describe_run"),
            node(
                predict_baselines,
                ["section_graphs", "folds", "test_predictions", "params:evaluation"],
                ["baseline_predictions", "oracle_depth_predictions"],
                name="predict_baselines",
            ),
            node(
                compute_fold_metrics,
                [
                    "test_predictions",
                    "baseline_predictions",
                    "ensemble_predictions",
                    "evaluation_run_info",
                    "params:evaluation",
                ],
                ["fold_metrics", "per_gene_pcc"],
                name="compute_fold_metrics",
            ),
            node(
                summarise_metrics,
                [
                    "fold_metrics",
                    "test_predictions",
                    "baseline_predictions",
                    "ensemble_predictions",
                    "oracle_depth_predictions",
                    "evaluation_run_info",
                ],
                ["overall_metrics", "comparison_table", "overall_mlflow_metrics"],
                name="summarise_metrics",
            ),
            node(
                plot_comparison,
                ["comparison_table", "overall_metrics", "evaluation_run_info"],
                "comparison_figure",
                name="plot_comparison",
            ),
            node(log_fold_metrics, "fold_metrics", None, name="log_fold_metrics"),
        ]
    )
